//! A tiny authoritative DNS server on loopback, so that tests never use the system resolver
//! (shared by the worker's route tests and the end-to-end tests, which use different parts).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record};

/// A zone a test can change while the server runs.
pub type Zone = Arc<Mutex<Vec<(String, RData)>>>;

/// A tiny authoritative DNS server over UDP answering from `zone`.
pub async fn dns(zone: Vec<(&'static str, RData)>) -> SocketAddr {
    let zone = zone.into_iter().map(|(n, r)| (n.to_string(), r)).collect();
    serve(Arc::new(Mutex::new(zone)), 60).await
}

/// `dns` answering from `zone` as it is at each query, with TTL 0 so that resolvers ask again.
pub async fn dns_shared(zone: Zone) -> SocketAddr {
    serve(zone, 0).await
}

async fn serve(zone: Zone, ttl: u32) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::new();
            response
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_authoritative(true);
            response.set_recursion_desired(query.recursion_desired());
            let mut known = false;
            for q in query.queries() {
                response.add_query(q.clone());
                for (name, rdata) in zone.lock().unwrap().iter() {
                    let owner = Name::from_ascii(name).unwrap();
                    if owner.eq_case(q.name()) || owner.to_lowercase() == q.name().to_lowercase() {
                        known = true;
                        if rdata.record_type() == q.query_type() {
                            response.add_answer(Record::from_rdata(owner, ttl, rdata.clone()));
                        }
                    }
                }
            }
            if !known {
                response.set_response_code(ResponseCode::NXDomain);
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    addr
}
