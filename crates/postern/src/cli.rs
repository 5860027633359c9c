//! Flags (docs/src/interfaces.md). Every flag also reads `POSTERN_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use postern_control::tracking::Location;

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "Postern, an SMTP TLS policy gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// `text` (for people), or `json`: one object per line with every field, for log
    /// pipelines.
    #[arg(
        long,
        global = true,
        env = "POSTERN_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The control plane and one worker in one process, with state, certificates and the admin
    /// token under --data-dir.
    Dev(DevArgs),
    /// The control plane: policy store, REST API, and the gRPC services workers connect to.
    Control(ControlArgs),
    /// An SMTP worker: enforces what the control plane sends it.
    Worker(WorkerArgs),
    /// Certificates for a production deployment: a CA, the control plane's, one per worker.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Drains the worker on this host (for a Kubernetes `preStop`): no new SMTP sessions, the
    /// whole queue due now; waits until the queue is empty and the sessions ended. Exits 0
    /// then, 1 if --timeout passed first (what is left stays in the spool), 2 on an error.
    Drain(DrainArgs),
    /// The command-line client of the REST API. Exit codes: 0 done, 1 refused by the API
    /// (4xx: the problem is printed), 2 bad usage or no token, 3 API unreachable or failing.
    Ctl(crate::ctl::CtlArgs),
    /// Tracking's database: copy a sled tracking store (releases before SQL) into it.
    #[command(subcommand)]
    Tracking(TrackingCommand),
    /// Shell completions for `postern` (bash, zsh, fish, elvish, powershell) on standard output.
    Completions { shell: clap_complete::Shell },
    /// The man page of `postern` (roff) on standard output.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum TrackingCommand {
    /// Copies the sled tracking store in DIR (a data directory's `tracking/`, as releases
    /// before SQL kept it) into the tracking database: messages, connections, TLS-RPT sessions
    /// and reports, MTA-STS knowledge, and the workers' cursors. What is stored already is kept:
    /// run it again to finish an import that stopped. Run it with the control plane stopped
    /// (sled allows one process per store).
    ImportSled {
        dir: PathBuf,
        /// The data directory whose SQLite tracking database receives it.
        #[arg(long, env = "POSTERN_DATA_DIR", default_value = "./postern-data")]
        data_dir: PathBuf,
        #[arg(long, env = "POSTERN_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
        database_url: Option<Location>,
    },
}

fn database_url(s: &str) -> Result<Location, String> {
    Location::postgres(s)
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The worker's --http-listen, on loopback (the only address it takes a drain from).
    #[arg(
        long,
        env = "POSTERN_WORKER_HTTP",
        default_value = "http://127.0.0.1:9090"
    )]
    pub http: String,
    /// Seconds to wait for the queue to empty.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Makes the CA (`ca.pem`, `ca.key`) and the control plane's server certificate
    /// (`control.pem`, `control.key`) for the names it is dialled by. Keys are 0600; nothing
    /// existing is overwritten.
    Init {
        #[arg(long, env = "POSTERN_PKI_DIR", default_value = "./pki")]
        dir: PathBuf,
        /// DNS names and IP addresses of the control plane (comma-separated), e.g.
        /// `postern-control.mail.svc,postern-control,10.0.0.2`.
        #[arg(long, value_delimiter = ',', required = true)]
        name: Vec<String>,
    },
    /// Renews the control plane's certificate (`control.pem`, `control.key`) from the CA of
    /// `pki init`; a running control plane serves it from the next handshake.
    Control {
        #[arg(long, env = "POSTERN_PKI_DIR", default_value = "./pki")]
        dir: PathBuf,
        /// DNS names and IP addresses of the control plane (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        name: Vec<String>,
    },
    /// Makes (or renews) worker ID's client certificate (`worker-ID.pem`, `worker-ID.key`):
    /// clientAuth, with the id as its DNS name, signed by the CA of `pki init`.
    Worker {
        id: String,
        #[arg(long, env = "POSTERN_PKI_DIR", default_value = "./pki")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[arg(long, env = "POSTERN_DATA_DIR", default_value = "./postern-data")]
    pub data_dir: PathBuf,
    /// Tracking in PostgreSQL (`postgres://user:password@host/db`, or `host=... dbname=...`),
    /// shared by control planes; without it, tracking is a SQLite database under --data-dir.
    #[arg(long, env = "POSTERN_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<Location>,
    /// SMTP listener of the dev worker.
    #[arg(long, env = "POSTERN_SMTP_LISTEN", default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,
    #[arg(long, env = "POSTERN_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    #[arg(long, env = "POSTERN_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// The public listener (plain HTTP here): GET /.well-known/mta-sts.txt and POST /tlsrpt.
    #[arg(long, env = "POSTERN_PUBLIC_LISTEN", default_value = "127.0.0.1:8081")]
    pub public_listen: SocketAddr,
    /// The dev worker's /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "POSTERN_WORKER_HTTP_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub worker_http_listen: SocketAddr,
    /// The name in the SMTP banner; defaults to the machine's name.
    #[arg(long, env = "POSTERN_HOSTNAME")]
    pub hostname: Option<String>,
    /// Addresses this worker is reached by through NAT or a load balancer (Postfix's
    /// `proxy_interfaces`): an MX host at one of them is this worker.
    #[arg(long, env = "POSTERN_PROXY_INTERFACES", value_delimiter = ',')]
    pub proxy_interfaces: Vec<std::net::IpAddr>,
    /// Load balancers (CIDR, comma-separated) whose connections to the SMTP listener start
    /// with a PROXY protocol v1 or v2 header naming the real client. With it set, the listener
    /// takes connections only from these networks and requires the header.
    #[arg(long, env = "POSTERN_SMTP_PROXY_PROTOCOL_FROM", value_delimiter = ',')]
    pub smtp_proxy_protocol_from: Vec<ipnet::IpNet>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "POSTERN_INSECURE_HTTP")]
    pub insecure_http: bool,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[arg(long, env = "POSTERN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Tracking in PostgreSQL (`postgres://user:password@host/db`, or `host=... dbname=...`),
    /// shared by control planes; without it, tracking is a SQLite database under --data-dir.
    #[arg(long, env = "POSTERN_DATABASE_URL", hide_env_values = true, value_parser = database_url)]
    pub database_url: Option<Location>,
    #[arg(long, env = "POSTERN_HTTP_LISTEN")]
    pub http_listen: SocketAddr,
    #[arg(long, env = "POSTERN_GRPC_LISTEN")]
    pub grpc_listen: SocketAddr,
    /// The public listener (HTTPS with --tls-cert): only GET /.well-known/mta-sts.txt and
    /// POST /tlsrpt, with limits of its own; without it they are not served.
    #[arg(long, env = "POSTERN_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// Server certificate (PEM) for gRPC, the REST API and the public listener (which then serve
    /// HTTPS).
    #[arg(long, env = "POSTERN_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "POSTERN_TLS_KEY")]
    pub tls_key: PathBuf,
    /// CA (PEM) that signs worker client certificates.
    #[arg(long, env = "POSTERN_CLIENT_CA")]
    pub client_ca: PathBuf,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The control plane's gRPC address, `https://host:port`.
    #[arg(long, env = "POSTERN_CONTROL")]
    pub control: String,
    /// Must be a DNS name in --client-cert.
    #[arg(long, env = "POSTERN_WORKER_ID")]
    pub worker_id: String,
    #[arg(long, env = "POSTERN_SMTP_LISTEN")]
    pub smtp_listen: SocketAddr,
    /// Spool, event outbox and last-known-good policy; locked by this process.
    #[arg(long, env = "POSTERN_SPOOL_DIR")]
    pub spool_dir: PathBuf,
    /// SMTP server certificate (PEM) for STARTTLS.
    #[arg(long, env = "POSTERN_TLS_CERT")]
    pub tls_cert: PathBuf,
    #[arg(long, env = "POSTERN_TLS_KEY")]
    pub tls_key: PathBuf,
    /// CA (PEM) that signs the control plane's certificate.
    #[arg(long, env = "POSTERN_CONTROL_CA")]
    pub control_ca: PathBuf,
    /// This worker's client certificate (PEM, clientAuth).
    #[arg(long, env = "POSTERN_CLIENT_CERT")]
    pub client_cert: PathBuf,
    #[arg(long, env = "POSTERN_CLIENT_KEY")]
    pub client_key: PathBuf,
    #[arg(long, env = "POSTERN_HTTP_LISTEN", default_value = "127.0.0.1:9090")]
    pub http_listen: SocketAddr,
    /// The name in the SMTP banner; defaults to the machine's name.
    #[arg(long, env = "POSTERN_HOSTNAME")]
    pub hostname: Option<String>,
    /// Addresses this worker is reached by through NAT or a load balancer (Postfix's
    /// `proxy_interfaces`): an MX host at one of them is this worker.
    #[arg(long, env = "POSTERN_PROXY_INTERFACES", value_delimiter = ',')]
    pub proxy_interfaces: Vec<std::net::IpAddr>,
    /// Load balancers (CIDR, comma-separated) whose connections to the SMTP listener start
    /// with a PROXY protocol v1 or v2 header naming the real client. With it set, the listener
    /// takes connections only from these networks and requires the header.
    #[arg(long, env = "POSTERN_SMTP_PROXY_PROTOCOL_FROM", value_delimiter = ',')]
    pub smtp_proxy_protocol_from: Vec<ipnet::IpNet>,
}
