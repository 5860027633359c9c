//! `postern dev`: the control plane and one worker in one process. On first start it makes a
//! local CA and certificates under `<data-dir>/tls`, the admin token, and trusts the loopback
//! networks so that mail can be sent at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use postern_control::Control;
use postern_control::auth::Actor;
use postern_control::change::Op;
use postern_control::control::Planned;
use postern_control::grpc::GrpcTls;
use postern_policy::Relay;
use postern_tls::pki::DevPki;
use postern_worker::{Backoff, ControlConnection, Worker, WorkerConfig};

use crate::Fatal;
use crate::cli::DevArgs;
use crate::control::{Listeners, bind, bind_http, fatal, open, serve};

fn read(path: &std::path::Path) -> Result<String, Fatal> {
    std::fs::read_to_string(path).map_err(|e| Fatal(format!("cannot read {}: {e}", path.display())))
}

pub async fn run(args: DevArgs) -> Result<(), Fatal> {
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(crate::machine_hostname);
    let http = bind_http(args.http_listen, args.insecure_http).await?;
    let grpc = bind("--grpc-listen", args.grpc_listen).await?;
    let public = bind("--public-listen", args.public_listen).await?;
    let smtp = bind("--smtp-listen", args.smtp_listen).await?;
    let worker_http = bind("--worker-http-listen", args.worker_http_listen).await?;
    crate::private_dir("--data-dir", &args.data_dir)?;
    let pki = DevPki::ensure(&args.data_dir.join("tls"), &hostname)
        .map_err(|e| Fatal(format!("cannot make the dev certificates: {e}")))?;
    // Lock the spool before anything is written, so a second `postern dev` exits at once.
    let grpc_addr = grpc.local_addr().map_err(fatal)?;
    let worker = Worker::start(WorkerConfig {
        worker_id: DevPki::WORKER_ID.into(),
        control: ControlConnection {
            url: format!("https://{}", reachable(grpc_addr)),
            ca_pem: read(&pki.ca)?,
            client_cert_pem: read(&pki.worker_cert)?,
            client_key_pem: read(&pki.worker_key)?,
            backoff: Backoff::default(),
            files: None,
        },
        spool_dir: args.data_dir.join("spool"),
        hostname,
        proxy_interfaces: args.proxy_interfaces.clone(),
        proxy_protocol_from: args.smtp_proxy_protocol_from.clone(),
        smtp_cert: pki.smtp_cert.clone(),
        smtp_key: pki.smtp_key.clone(),
    })
    .map_err(fatal)?;
    let control = open(&args.data_dir, args.database_url.as_ref()).await?;
    seed_relay(&control).await?;
    let tls = GrpcTls::from_pem(
        &read(&pki.control_cert)?,
        &read(&pki.control_key)?,
        &read(&pki.ca)?,
    )
    .map_err(|e| Fatal(format!("the dev certificates: {e}")))?;
    let shutdown = crate::shutdown_on_signal();
    tracing::info!(smtp = %smtp.local_addr().map_err(fatal)?, worker_http = %worker_http.local_addr().map_err(fatal)?, "dev worker listening");
    let worker_task = tokio::spawn(worker.run(smtp, Some(worker_http), shutdown.clone()));
    let listeners = Listeners {
        http,
        https: None,
        grpc,
        public: Some(public),
    };
    serve(listeners, tls, control, shutdown).await?;
    worker_task.await.map_err(fatal)?.map_err(fatal)
}

/// Where the dev worker reaches a listener bound to `addr` (a wildcard means loopback; the dev
/// certificate names 127.0.0.1 and ::1).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// On first start, trust the loopback networks so that mail can be sent at once. Later starts
/// leave relay alone: the operator may have changed it.
async fn seed_relay(control: &std::sync::Arc<Control>) -> Result<(), Fatal> {
    if control.read().version != 1 {
        return Ok(());
    }
    let relay = Relay {
        domains: Vec::new(),
        networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
    };
    control
        .write::<_, postern_control::error::ControlError>(&Actor::system(), "postern dev", |_| {
            Ok(Planned {
                ops: vec![Op::SetRelay { relay }],
                summary: "dev mode: trust loopback networks".into(),
                field: "/networks",
                out: (),
            })
        })
        .await
        .map_err(|e| Fatal(format!("cannot seed the dev relay networks: {}", e)))?;
    Ok(())
}
