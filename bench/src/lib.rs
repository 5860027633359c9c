//! Shared by the in-process benchmarks: a control plane (real REST, real gRPC over mutual TLS
//! on loopback) in this process.

use std::sync::Arc;

use postern_control::Control;
use postern_control::grpc::GrpcTls;
use postern_control::store::SledStore;
use postern_control::tracking::{Location, Tracking};
use postern_tls::pki::Ca;

/// A control plane serving REST (plain HTTP) and gRPC on loopback.
pub struct Plane {
    pub control: Arc<Control>,
    /// `http://addr` of the REST API.
    pub base: String,
    pub token: String,
    pub grpc: String,
    pub ca: Ca,
    pub dir: tempfile::TempDir,
}

pub async fn plane() -> Plane {
    plane_with(None).await
}

/// A control plane whose tracking is at `tracking` (SQLite in its directory if none).
pub async fn plane_with(tracking: Option<Location>) -> Plane {
    let dir = tempfile::tempdir().unwrap();
    let location = tracking.unwrap_or_else(|| Location::Sqlite(dir.path().join("tracking.sqlite")));
    let tracking = tokio::task::spawn_blocking(move || Tracking::connect(&location))
        .await
        .unwrap()
        .unwrap();
    let control = Control::open(
        Arc::new(SledStore::open(&dir.path().join("db")).unwrap()),
        Arc::new(tracking),
    )
    .unwrap();
    control.initialise().await.unwrap();
    control
        .bootstrap_admin_token(&dir.path().join("admin-token"))
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let ca = Ca::new("bench CA").unwrap();
    let server = ca.server(&["127.0.0.1"]).unwrap();
    let tls = GrpcTls::from_pem(&server.cert_pem, &server.key_pem, &ca.cert_pem).unwrap();
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (base, grpc_addr) = (
        format!("http://{}", rest.local_addr().unwrap()),
        grpc.local_addr().unwrap().to_string(),
    );
    tokio::spawn(postern_control::run(
        rest,
        control.clone(),
        std::future::pending(),
    ));
    tokio::spawn(postern_control::grpc::serve(
        grpc,
        control.clone(),
        tls,
        std::future::pending(),
    ));
    Plane {
        control,
        base,
        token,
        grpc: grpc_addr,
        ca,
        dir,
    }
}

impl Plane {
    /// How an in-process worker reaches this control plane: a client certificate naming every
    /// one of `names` (worker ids), the plane's CA, the default backoff.
    pub fn connection(&self, names: &[&str]) -> postern_worker::ControlConnection {
        let cert = self.ca.client(names).unwrap();
        postern_worker::ControlConnection {
            url: format!("https://{}", self.grpc),
            ca_pem: self.ca.cert_pem.clone(),
            client_cert_pem: cert.cert_pem,
            client_key_pem: cert.key_pem,
            backoff: postern_worker::Backoff::default(),
            files: None,
        }
    }
}
