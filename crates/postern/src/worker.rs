//! `postern worker`: lock the spool, load the last-known-good policy, connect to the control
//! plane and serve SMTP.

use postern_tls::files;
use postern_worker::{Backoff, ControlConnection, PemFiles, Worker, WorkerConfig};

use crate::Fatal;
use crate::cli::WorkerArgs;
use crate::control::{bind, fatal};

pub async fn run(args: WorkerArgs) -> Result<(), Fatal> {
    if !args.control.starts_with("https://") {
        return Err(Fatal(format!(
            "--control {} must be an https:// URL (gRPC always uses mutual TLS)",
            args.control
        )));
    }
    // Checked here for errors that name the flag; the worker reads them again on renewal.
    files::certificates("--tls-cert", &args.tls_cert).map_err(fatal)?;
    files::private_key("--tls-key", &args.tls_key).map_err(fatal)?;
    let control = ControlConnection {
        url: args.control,
        ca_pem: files::certificates("--control-ca", &args.control_ca)
            .map_err(fatal)?
            .text,
        client_cert_pem: files::certificates("--client-cert", &args.client_cert)
            .map_err(fatal)?
            .text,
        client_key_pem: files::private_key("--client-key", &args.client_key)
            .map_err(fatal)?
            .text,
        backoff: Backoff::default(),
        files: Some(PemFiles {
            ca: args.control_ca.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
        }),
    };
    crate::private_dir("--spool-dir", &args.spool_dir)?;
    let worker = Worker::start(WorkerConfig {
        worker_id: args.worker_id,
        control,
        spool_dir: args.spool_dir,
        hostname: args.hostname.unwrap_or_else(crate::machine_hostname),
        proxy_interfaces: args.proxy_interfaces,
        proxy_protocol_from: args.smtp_proxy_protocol_from,
        smtp_cert: args.tls_cert.clone(),
        smtp_key: args.tls_key.clone(),
    })
    .map_err(fatal)?;
    let smtp = bind("--smtp-listen", args.smtp_listen).await?;
    let http = bind("--http-listen", args.http_listen).await?;
    tracing::info!(
        smtp = %smtp.local_addr().map_err(fatal)?,
        http = %http.local_addr().map_err(fatal)?,
        version = worker.policy().version(),
        "worker listening"
    );
    worker
        .run(smtp, Some(http), crate::shutdown_on_signal())
        .await
        .map_err(fatal)
}
