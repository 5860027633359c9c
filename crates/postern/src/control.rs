//! `postern control` and `postern dev`: open the store, make the first admin token, bind the
//! REST listener and serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use postern_control::Control;
use postern_control::auth::Actor;
use postern_control::change::Op;
use postern_control::control::Planned;
use postern_control::store::SledStore;
use postern_policy::Relay;
use tokio::net::TcpListener;

use crate::Fatal;
use crate::cli::{ControlArgs, DevArgs};

pub async fn control(args: ControlArgs) -> Result<(), Fatal> {
    for (flag, file) in [
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
        ("--client-ca", &args.client_ca),
    ] {
        if let Some(path) = file {
            std::fs::read(path)
                .map_err(|e| Fatal(format!("cannot read {flag} {}: {e}", path.display())))?;
        }
    }
    let listener = bind_http(args.http_listen, args.insecure_http).await?;
    let control = open(&args.data_dir).await?;
    serve(listener, control).await
}

pub async fn dev(args: DevArgs) -> Result<(), Fatal> {
    let listener = bind_http(args.http_listen, args.insecure_http).await?;
    let control = open(&args.data_dir).await?;
    seed_dev_relay(&control).await?;
    tracing::info!(
        smtp = %args.smtp_listen,
        grpc = %args.grpc_listen,
        "dev mode: control plane only for now; the worker arrives with the worker issues"
    );
    serve(listener, control).await
}

/// Plain HTTP is accepted on loopback; elsewhere only with --insecure-http (PRODUCT.md 6).
async fn bind_http(addr: SocketAddr, insecure: bool) -> Result<TcpListener, Fatal> {
    if !addr.ip().is_loopback() && !insecure {
        return Err(Fatal(format!(
            "refusing plain HTTP on non-loopback --http-listen {addr}; pass --insecure-http to allow it"
        )));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| Fatal(format!("cannot listen on --http-listen {addr}: {e}")))
}

async fn open(data_dir: &Path) -> Result<Arc<Control>, Fatal> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Fatal(format!(
            "cannot create --data-dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let db = data_dir.join("db");
    let store = SledStore::open(&db).map_err(|e| {
        Fatal(format!(
            "cannot open the store in {} (is another postern using it?): {e}",
            db.display()
        ))
    })?;
    let control = Control::open(Arc::new(store))
        .map_err(|e| Fatal(format!("cannot load the store in {}: {e}", db.display())))?;
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

/// On first start, dev mode trusts loopback clients so that mail can be sent at once.
async fn seed_dev_relay(control: &Control) -> Result<(), Fatal> {
    if control.read().version != 0 {
        return Ok(());
    }
    let relay = Relay {
        domains: Vec::new(),
        networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
    };
    control
        .write(&Actor::system(), "postern dev", |_| {
            Ok(Planned {
                ops: vec![Op::SetRelay { relay }],
                summary: "dev mode: trust loopback networks".into(),
                field: "/networks",
                out: (),
            })
        })
        .await
        .map_err(|e| Fatal(format!("cannot seed the dev relay networks: {}", e.detail)))?;
    Ok(())
}

async fn serve(listener: TcpListener, control: Arc<Control>) -> Result<(), Fatal> {
    let addr = listener.local_addr().map_err(|e| ("http listener", e))?;
    tracing::info!(%addr, version = control.read().version, "control plane REST API listening");
    postern_control::run(listener, control.clone(), shutdown_signal())
        .await
        .map_err(|e| ("http server", e))?;
    control.store().flush().map_err(|e| ("final flush", e))?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
