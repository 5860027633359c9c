//! The policy stream's protocol against the real gRPC server (mutual TLS on loopback), driven by
//! a hand-written worker so each rule of the protocol can be observed: snapshots carry fresh
//! nonces, stale nonces are ignored, a worker that falls behind gets only the newest version.

mod common;

use std::time::Duration;

use common::Api;
use postern_control::grpc::{GrpcTls, serve};
use postern_proto::pb::policy_distribution_client::PolicyDistributionClient;
use postern_proto::pb::{self, control_message, worker_message};
use postern_tls::pki::Ca;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A gRPC channel to the control plane with a client certificate for `cert_name`.
async fn channel(
    addr: std::net::SocketAddr,
    ca: &Ca,
    cert_name: &str,
) -> tonic::transport::Channel {
    let cert = ca.client(&[cert_name]).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .identity(Identity::from_pem(cert.cert_pem, cert.key_pem));
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

struct RawWorker {
    tx: mpsc::Sender<pb::WorkerMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
}

impl RawWorker {
    async fn connect(
        addr: std::net::SocketAddr,
        ca: &Ca,
        id: &str,
        version: u64,
    ) -> Result<RawWorker, tonic::Status> {
        RawWorker::connect_as(addr, ca, id, id, version).await
    }

    /// Connects with a certificate for `cert_name`, claiming the id `id`.
    async fn connect_as(
        addr: std::net::SocketAddr,
        ca: &Ca,
        cert_name: &str,
        id: &str,
        version: u64,
    ) -> Result<RawWorker, tonic::Status> {
        let channel = channel(addr, ca, cert_name).await;
        let (tx, rx) = mpsc::channel(4);
        let hello = pb::Hello {
            worker_id: id.into(),
            smtp_addr: "127.0.0.1:25".into(),
            version,
            draining: false,
        };
        tx.send(pb::WorkerMessage {
            msg: Some(worker_message::Msg::Hello(hello)),
        })
        .await
        .unwrap();
        let inbound = PolicyDistributionClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawWorker { tx, inbound })
    }

    async fn snapshot(&mut self, wait: Duration) -> Option<pb::Snapshot> {
        match tokio::time::timeout(wait, self.inbound.message()).await {
            Ok(Ok(Some(pb::ControlMessage {
                msg: Some(control_message::Msg::Snapshot(s)),
            }))) => Some(s),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => None,
        }
    }

    async fn ack(&self, nonce: &str, version: u64) {
        let ack = pb::Ack {
            nonce: nonce.into(),
            version,
        };
        self.tx
            .send(pb::WorkerMessage {
                msg: Some(worker_message::Msg::Ack(ack)),
            })
            .await
            .unwrap();
    }
}

async fn start() -> (Api, Ca, std::net::SocketAddr) {
    postern_tls::install_crypto_provider();
    let api = Api::new().await;
    api.control.initialise().await.unwrap();
    let ca = Ca::new("test CA").unwrap();
    let server = ca.server(&["127.0.0.1"]).unwrap();
    let tls = GrpcTls::from_pem(&server.cert_pem, &server.key_pem, &ca.cert_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        api.control.clone(),
        tls,
        std::future::pending(),
    ));
    (api, ca, addr)
}

async fn applied(api: &Api, id: &str) -> u64 {
    let w = api.get("/v1/workers").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap();
    w["applied_version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_nonces_are_ignored_and_a_slow_worker_gets_only_the_newest_version() {
    let (api, ca, addr) = start().await;
    let mut w = RawWorker::connect(addr, &ca, "w1", 0).await.unwrap();
    let first = w
        .snapshot(Duration::from_secs(10))
        .await
        .expect("the initial snapshot");
    assert_eq!(first.version, 1);
    assert!(!first.nonce.is_empty());

    // The worker is slow: five versions are written before it answers. None is sent meanwhile.
    for i in 0..5 {
        api.post(
            "/v1/policy/inbound/rules",
            json!({"match": format!("10.{i}.0.0/16"), "level": "encrypt"}),
        )
        .await;
    }
    assert!(
        w.snapshot(Duration::from_millis(300)).await.is_none(),
        "a snapshot was sent before the answer"
    );

    // An ACK with a stale nonce changes nothing and does not count as the answer.
    w.ack("not-the-nonce", 1).await;
    assert!(w.snapshot(Duration::from_millis(300)).await.is_none());
    assert_eq!(applied(&api, "w1").await, 0);

    // The real answer: the worker is sent the newest version only, with a new nonce.
    w.ack(&first.nonce, 1).await;
    let newest = w
        .snapshot(Duration::from_secs(10))
        .await
        .expect("the newest snapshot");
    assert_eq!(newest.version, 6);
    assert_ne!(newest.nonce, first.nonce);
    assert_eq!(newest.policy.unwrap().inbound.len(), 5);
    assert_eq!(applied(&api, "w1").await, 1);
    w.ack(&newest.nonce, 6).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while applied(&api, "w1").await != 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_holds_the_current_version_is_sent_nothing() {
    let (api, ca, addr) = start().await;
    let mut w = RawWorker::connect(addr, &ca, "w2", 1).await.unwrap();
    assert!(w.snapshot(Duration::from_millis(300)).await.is_none());
    assert_eq!(applied(&api, "w2").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_that_is_not_in_the_certificate_is_refused() {
    let (api, ca, addr) = start().await;
    // A valid certificate for "alice", used to claim the id "bob".
    let err = RawWorker::connect_as(addr, &ca, "alice", "bob", 0)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        api.get("/v1/workers").await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Under a stream of overlapping writes a worker keeps receiving recent durable versions; it
/// is not starved until the writes pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_keep_up_while_writes_overlap() {
    let (api, ca, addr) = start().await;
    let api = std::sync::Arc::new(api);
    let mut w = RawWorker::connect(addr, &ca, "w3", 0).await.unwrap();
    let first = w.snapshot(Duration::from_secs(10)).await.unwrap();
    w.ack(&first.nonce, first.version).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = api
                        .post(
                            "/v1/policy/outbound/rules",
                            json!({"match": format!("w{t}-{n}.example"), "level": "may"}),
                        )
                        .await;
                    assert_eq!(r.status, axum::http::StatusCode::CREATED);
                    n += 1;
                }
            })
        })
        .collect();
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Some(s) = w.snapshot(Duration::from_millis(200)).await {
            received.push(s.version);
            w.ack(&s.nonce, s.version).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in writers {
        t.await.unwrap();
    }
    assert!(
        received.len() >= 3,
        "only {received:?} arrived during two seconds of writes"
    );
    assert!(received.windows(2).all(|p| p[0] < p[1]), "{received:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_by_id_beside_an_unanswered_snapshot() {
    use pb::command;
    use postern_control::commands::QueueCommand;
    use postern_control::workers::CommandError;
    let (api, ca, addr) = start().await;
    // Version 0: the worker is sent version 1 and leaves it unanswered.
    let mut w = RawWorker::connect(addr, &ca, "w", 0).await.unwrap();
    assert!(w.snapshot(Duration::from_secs(5)).await.is_some());
    let control = api.control.clone();
    let asked = tokio::spawn(async move {
        let op = QueueCommand::Flush {
            destination: "partner.example".into(),
        };
        control.workers.command("w", op).await
    });
    let command = match tokio::time::timeout(Duration::from_secs(5), w.inbound.message()).await {
        Ok(Ok(Some(pb::ControlMessage {
            msg: Some(control_message::Msg::Command(c)),
        }))) => c,
        other => panic!("expected a command, got {other:?}"),
    };
    assert!(
        matches!(&command.op, Some(command::Op::Flush(f)) if f.destination == "partner.example")
    );
    let answer = |id: &str, count| pb::WorkerMessage {
        msg: Some(worker_message::Msg::Result(pb::CommandResult {
            id: id.into(),
            count,
            ..Default::default()
        })),
    };
    // An answer to some other command is not this one's.
    w.tx.send(answer("not-the-id", 99)).await.unwrap();
    w.tx.send(answer(&command.id, 3)).await.unwrap();
    let result = asked.await.unwrap().unwrap();
    assert_eq!(result.count, 3);

    // A worker that goes away before answering fails its pending command.
    let control = api.control.clone();
    let asked = tokio::spawn(async move {
        let op = QueueCommand::Retry {
            queue_id: "X".into(),
        };
        control.workers.command("w", op).await
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), w.inbound.message()).await;
    drop(w);
    let error = asked.await.unwrap().unwrap_err();
    assert_eq!(error, CommandError::Disconnected("w".into()));
    let error = api
        .control
        .workers
        .command("w", QueueCommand::Drain)
        .await
        .unwrap_err();
    assert_eq!(error, CommandError::NotConnected("w".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_uploads_are_acknowledged_and_checked_against_the_certificate() {
    use pb::tracking_client::TrackingClient;
    let (api, ca, addr) = start().await;
    let upload = |cert_name: &'static str, claimed: &'static str, seqs: Vec<u64>| {
        let ca = &ca;
        async move {
            let channel = channel(addr, ca, cert_name).await;
            let events = seqs
                .into_iter()
                .map(|seq| pb::EventRecord {
                    seq,
                    at_ms: 1_000 + seq,
                    policy_version: 1,
                    truncated: false,
                    event: Some(pb::event_record::Event::Deleted(pb::Deleted {
                        queue_id: format!("Q{seq}"),
                        dsn: false,
                    })),
                })
                .collect();
            let batch = pb::EventBatch {
                worker_id: claimed.into(),
                epoch: "E1".into(),
                events,
            };
            let mut acks = TrackingClient::new(channel)
                .upload(tokio_stream::iter(vec![batch]))
                .await
                .unwrap()
                .into_inner();
            acks.message().await
        }
    };
    let ack = upload("w", "w", vec![1, 2, 3]).await.unwrap().unwrap();
    assert_eq!((ack.epoch.as_str(), ack.stored_seq), ("E1", 3));
    // A replay with one new event: acknowledged up to it, the rest not stored again.
    let ack = upload("w", "w", vec![2, 3, 4]).await.unwrap().unwrap();
    assert_eq!(ack.stored_seq, 4);
    let q2 = api.get("/v1/messages/Q2").await;
    assert_eq!(q2.body["timeline"].as_array().unwrap().len(), 1);
    // A batch that skips 6 is acknowledged up to the hole only: 7 is not stored.
    let ack = upload("w", "w", vec![5, 7]).await.unwrap().unwrap();
    assert_eq!(ack.stored_seq, 5);
    assert_eq!(api.get("/v1/messages/Q7").await.status, 404);
    let error = upload("alice", "bob", vec![1]).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
}

/// Uploads `events` (seq 1, 2, ...) as `claimed` with a certificate for `cert_name`.
async fn upload_events(
    addr: std::net::SocketAddr,
    ca: &Ca,
    cert_name: &str,
    claimed: &str,
    events: Vec<pb::event_record::Event>,
) -> Result<Option<pb::UploadAck>, tonic::Status> {
    use pb::tracking_client::TrackingClient;
    let channel = channel(addr, ca, cert_name).await;
    let events = events
        .into_iter()
        .zip(1..)
        .map(|(event, seq)| pb::EventRecord {
            seq,
            at_ms: 1_000 + seq,
            policy_version: 1,
            truncated: false,
            event: Some(event),
        })
        .collect();
    let batch = pb::EventBatch {
        worker_id: claimed.into(),
        epoch: "E1".into(),
        events,
    };
    let mut acks = TrackingClient::new(channel)
        .upload(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    acks.message().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_rewrite_a_message_another_worker_received() {
    use pb::event_record::Event;
    let (api, ca, addr) = start().await;
    let source = |ip: &str| pb::Source {
        ip: ip.into(),
        helo: "client.example".into(),
        tls: None,
    };
    let received = |sender: &str, ip: &str| {
        Event::Received(pb::Received {
            queue_id: "Q".into(),
            session: "S".into(),
            source: Some(source(ip)),
            sender: sender.into(),
            recipients: vec!["b@partner.example".into()],
            size: 10,
            subject: Some("real".into()),
            message_id: None,
        })
    };
    let ack = upload_events(
        addr,
        &ca,
        "w1",
        "w1",
        vec![received("a@x.example", "192.0.2.7")],
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ack.stored_seq, 1);
    let before = api.get("/v1/messages/Q").await.body;
    assert_eq!(before["worker"], "w1");

    // Worker w2 holds a valid certificate of its own: its events about w1's message are
    // acknowledged (so its outbox trims them) but refused, counted, and change nothing.
    let forged = vec![
        received("forger@evil.example", "203.0.113.66"),
        Event::Attempt(pb::Attempt {
            queue_id: "Q".into(),
            recipient: "b@partner.example".into(),
            leg: None,
            reply: "250 forged".into(),
            violation: 0,
            policy: None,
        }),
        Event::Delivered(pb::Delivered {
            queue_id: "Q".into(),
            recipient: "b@partner.example".into(),
            reply: "250 forged".into(),
        }),
    ];
    let refused_before = api
        .control
        .tracking
        .foreign
        .load(std::sync::atomic::Ordering::Relaxed);
    let ack = upload_events(addr, &ca, "w2", "w2", forged)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.stored_seq, 3);
    let refused = api
        .control
        .tracking
        .foreign
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused - refused_before, 3);
    let after = api.get("/v1/messages/Q").await.body;
    assert_eq!(after, before, "the forged events changed the record");
    assert_eq!(after["sender"], "a@x.example");
    assert_eq!(after["status"], "queued");
    // Claiming to be w1 needs w1's certificate.
    let error = upload_events(
        addr,
        &ca,
        "w2",
        "w1",
        vec![received("x@evil.example", "1.2.3.4")],
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), tonic::Code::PermissionDenied);
}
