//! `postern control`: open the store, make the first version and admin token, then serve REST
//! and mutual-TLS gRPC until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use postern_control::Control;
use postern_control::grpc::GrpcTls;
use postern_control::store::SledStore;
use postern_control::tracking::{Location, Tracking};
use postern_tls::files;
use postern_tls::reload::ReloadingCert;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Fatal;
use crate::cli::ControlArgs;

pub async fn run(args: ControlArgs) -> Result<(), Fatal> {
    // Both listeners present the same certificate, read again when its files change (a
    // renewal is served from the next handshake; connections in flight keep theirs).
    let cert = ReloadingCert::open(&args.tls_cert, &args.tls_key)
        .map_err(|e| Fatal(format!("--tls-cert/--tls-key: {e}")))?;
    let tls = GrpcTls {
        cert: cert.clone(),
        client_ca_pem: files::certificates("--client-ca", &args.client_ca)
            .map_err(fatal)?
            .text,
    };
    // docs/src/interfaces.md: the REST listener serves HTTPS when given --tls-cert/--tls-key.
    let https = Arc::new(postern_tls::server_config_with(cert));
    let http = bind("--http-listen", args.http_listen).await?;
    let grpc = bind("--grpc-listen", args.grpc_listen).await?;
    let public = match args.public_listen {
        Some(addr) => Some(bind("--public-listen", addr).await?),
        None => None,
    };
    let control = open(&args.data_dir, args.database_url.as_ref()).await?;
    let shutdown = crate::shutdown_on_signal();
    let listeners = Listeners {
        http,
        https: Some(https),
        grpc,
        public,
    };
    serve(listeners, tls, control, shutdown).await
}

/// The control plane's listeners: REST (HTTPS when `https` is given, the public listener
/// too), gRPC, and the public protocol endpoints if asked for.
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub grpc: TcpListener,
    pub public: Option<TcpListener>,
}

pub fn fatal(e: impl std::fmt::Display) -> Fatal {
    Fatal(e.to_string())
}

/// Plain HTTP is accepted on loopback; elsewhere only with --insecure-http
/// (docs/src/interfaces.md).
pub async fn bind_http(addr: SocketAddr, insecure: bool) -> Result<TcpListener, Fatal> {
    if !addr.ip().is_loopback() && !insecure {
        return Err(Fatal(format!(
            "refusing plain HTTP on non-loopback --http-listen {addr}; pass --insecure-http to allow it"
        )));
    }
    bind("--http-listen", addr).await
}

pub async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, Fatal> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Fatal(format!("cannot listen on {flag} {addr}: {e}")))
}

/// Where tracking lives: `--database-url`, else SQLite under the data directory.
pub fn tracking_location(data_dir: &Path, url: Option<&Location>) -> Location {
    url.cloned()
        .unwrap_or_else(|| Location::Sqlite(data_dir.join("tracking.sqlite")))
}

/// Opens the tracking database (off the async threads: PostgreSQL's client blocks).
pub async fn open_tracking(location: Location) -> Result<Tracking, Fatal> {
    let describe = location.describe();
    tokio::task::spawn_blocking(move || Tracking::connect(&location))
        .await
        .map_err(fatal)?
        .map_err(|e| Fatal(format!("cannot open tracking ({describe}): {e}")))
}

/// Opens the store, writes version 1 and the first admin token on first start.
pub async fn open(data_dir: &Path, database_url: Option<&Location>) -> Result<Arc<Control>, Fatal> {
    crate::private_dir("--data-dir", data_dir)?;
    let db = data_dir.join("db");
    let store = SledStore::open(&db).map_err(|e| {
        Fatal(format!(
            "cannot open the store in {} (is another postern using it?): {e}",
            db.display()
        ))
    })?;
    let tracking = open_tracking(tracking_location(data_dir, database_url)).await?;
    tracing::info!(database = %tracking.describe(), messages = tracking.count(), "tracking open");
    // Releases before SQL kept tracking in sled; this one no longer reads it.
    let sled = data_dir.join("tracking");
    if sled.join("conf").exists() {
        tracing::warn!(store = %sled.display(), "a sled tracking store from an earlier release is not read: `postern tracking import-sled {}` copies its history into the tracking database", sled.display());
    }
    let control = Control::open(Arc::new(store), Arc::new(tracking))
        .map_err(|e| Fatal(format!("cannot load the store in {}: {e}", db.display())))?;
    control
        .initialise()
        .await
        .map_err(|e| Fatal(format!("cannot write the initial version: {}", e)))?;
    let token_path = data_dir.join("admin-token");
    if control
        .bootstrap_admin_token(&token_path)
        .await
        .map_err(|e| Fatal(format!("cannot write {}: {e}", token_path.display())))?
    {
        tracing::info!(path = %token_path.display(), "created the first admin token");
    }
    Ok(control)
}

/// Serves REST (HTTPS when `https` is given) and gRPC until `shutdown` turns true, then flushes
/// the store.
pub async fn serve(
    listeners: Listeners,
    tls: GrpcTls,
    control: Arc<Control>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let Listeners {
        http,
        https,
        grpc,
        public,
    } = listeners;
    let addr = http.local_addr().map_err(fatal)?;
    let grpc_addr = grpc.local_addr().map_err(fatal)?;
    let public_addr = match &public {
        Some(p) => p.local_addr().map_err(fatal)?.to_string(),
        None => "none".into(),
    };
    let scheme = if https.is_some() { "https" } else { "http" };
    tracing::info!(%addr, %scheme, grpc = %grpc_addr, public = %public_addr, version = control.read().version, "control plane listening");
    let until = |mut s: watch::Receiver<bool>| async move {
        let _ = s.wait_for(|s| *s).await;
    };
    tokio::spawn(postern_control::tracking::run_retention(
        control.tracking.clone(),
        control.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(postern_control::tracking::run_health(
        control.tracking.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(postern_control::reports::run(control.clone()));
    let public_task = public.map(|listener| {
        tokio::spawn(postern_control::run_public(
            listener,
            control.clone(),
            https.clone(),
            until(shutdown.clone()),
        ))
    });
    let grpc_task = tokio::spawn(postern_control::grpc::serve(
        grpc,
        control.clone(),
        tls,
        until(shutdown.clone()),
    ));
    match https {
        Some(config) => {
            postern_control::run_https(http, control.clone(), config, until(shutdown)).await
        }
        None => postern_control::run(http, control.clone(), until(shutdown)).await,
    }
    .map_err(fatal)?;
    grpc_task
        .await
        .map_err(fatal)?
        .map_err(|e| Fatal(format!("gRPC server: {e}")))?;
    if let Some(task) = public_task {
        task.await
            .map_err(fatal)?
            .map_err(|e| Fatal(format!("public listener: {e}")))?;
    }
    control.store().flush().map_err(fatal)?;
    tracing::info!("control plane stopped");
    Ok(())
}
