//! Flags (PRODUCT.md 6). Every flag also reads `POSTERN_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "Postern, an SMTP TLS policy gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Control plane and (once workers exist) one worker, with embedded state under --data-dir.
    Dev(DevArgs),
    /// The control plane: policy store, REST API, and the gRPC services workers connect to.
    Control(ControlArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[arg(long, env = "POSTERN_DATA_DIR", default_value = "./postern-data")]
    pub data_dir: PathBuf,
    /// SMTP listener of the dev worker.
    #[arg(long, env = "POSTERN_SMTP_LISTEN", default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,
    #[arg(long, env = "POSTERN_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    #[arg(long, env = "POSTERN_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "POSTERN_INSECURE_HTTP")]
    pub insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[arg(long, env = "POSTERN_DATA_DIR")]
    pub data_dir: PathBuf,
    #[arg(long, env = "POSTERN_HTTP_LISTEN")]
    pub http_listen: SocketAddr,
    #[arg(long, env = "POSTERN_GRPC_LISTEN")]
    pub grpc_listen: SocketAddr,
    /// Server certificate (PEM) for gRPC.
    #[arg(long, env = "POSTERN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "POSTERN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs worker client certificates.
    #[arg(long, env = "POSTERN_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "POSTERN_INSECURE_HTTP")]
    pub insecure_http: bool,
}
