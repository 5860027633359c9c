//! The `postern` binary: parses flags, builds configuration and calls the components' `run`.

#![forbid(unsafe_code)]

mod cli;
mod control;
mod ctl;
mod dev;
mod drain;
mod worker;

use std::process::ExitCode;

use clap::Parser;

/// A startup problem: one line naming what is wrong, and exit code 2 (docs/src/interfaces.md).
#[derive(Debug)]
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<(&str, E)> for Fatal {
    fn from((what, e): (&str, E)) -> Self {
        Fatal(format!("{what}: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // Clap's message runs over several lines before a blank line and the usage: keep
            // that part, on one line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            eprintln!(
                "postern: {} (see postern --help)",
                message.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    // Everything Postern writes (spool, outbox, stores, keys, tokens) is its own, as Postfix's
    // queue is: directories 0700, files 0600.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    postern_tls::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match cli.command {
            cli::Command::Dev(args) => exit(dev::run(args).await),
            cli::Command::Control(args) => exit(control::run(args).await),
            cli::Command::Worker(args) => exit(worker::run(args).await),
            cli::Command::Pki(command) => exit(pki(command)),
            cli::Command::Drain(args) => drain::run(args).await,
            cli::Command::Ctl(args) => match ctl::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern ctl: {e}");
                    ExitCode::from(e.exit_code())
                }
            },
            cli::Command::Tracking(cli::TrackingCommand::ImportSled {
                dir,
                data_dir,
                database_url,
            }) => exit(import_sled(dir, data_dir, database_url).await),
            cli::Command::Completions { shell } => {
                let mut command = <cli::Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "postern", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
            cli::Command::Man => {
                let command = <cli::Cli as clap::CommandFactory>::command();
                exit(
                    clap_mangen::Man::new(command)
                        .render(&mut std::io::stdout())
                        .map_err(|e| Fatal(e.to_string())),
                )
            }
        }
    })
}

/// A server command's end: 0, or its one-line error and 2.
fn exit(result: Result<(), Fatal>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("postern: {message}");
            ExitCode::from(2)
        }
    }
}

/// Turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
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
        let _ = tx.send(true);
    });
    rx
}

/// Creates `dir` (named by `flag` in errors) if needed and makes it private (0700), also when
/// an operator made it with wider permissions.
pub fn private_dir(flag: &str, dir: &std::path::Path) -> Result<(), Fatal> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Fatal(format!("cannot create {flag} {}: {e}", dir.display())))
}

/// The machine's name, for the SMTP banner.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `postern pki init|worker`: writes the files and says which flags take them.
fn pki(command: cli::PkiCommand) -> Result<(), Fatal> {
    use postern_tls::pki::Layout;
    match command {
        cli::PkiCommand::Init { dir, name } => {
            let layout = Layout::new(&dir);
            let names: Vec<&str> = name.iter().map(String::as_str).collect();
            layout.init(&names).map_err(|e| Fatal(e.to_string()))?;
            println!(
                "CA: {} (key {}, keep it offline)\ncontrol plane: --tls-cert {} --tls-key {} --client-ca {}",
                layout.ca.display(),
                layout.ca_key.display(),
                layout.control_cert.display(),
                layout.control_key.display(),
                layout.ca.display()
            );
        }
        cli::PkiCommand::Control { dir, name } => {
            let layout = Layout::new(&dir);
            let names: Vec<&str> = name.iter().map(String::as_str).collect();
            layout
                .issue_control(&names)
                .map_err(|e| Fatal(e.to_string()))?;
            println!(
                "control plane: {} and {} renewed",
                layout.control_cert.display(),
                layout.control_key.display()
            );
        }
        cli::PkiCommand::Worker { id, dir } => {
            let layout = Layout::new(&dir);
            let (cert, key) = layout.issue_worker(&id).map_err(|e| Fatal(e.to_string()))?;
            println!(
                "worker {id}: --worker-id {id} --client-cert {} --client-key {} --control-ca {}",
                cert.display(),
                key.display(),
                layout.ca.display()
            );
        }
    }
    Ok(())
}

/// `postern tracking import-sled`: progress on standard error, the totals on standard output.
async fn import_sled(
    dir: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    url: Option<postern_control::tracking::Location>,
) -> Result<(), Fatal> {
    let location = control::tracking_location(&data_dir, url.as_ref());
    let tracking = control::open_tracking(location).await?;
    let describe = tracking.describe();
    let done = tokio::task::spawn_blocking(move || {
        let mut progress = |what: &str, n: u64| eprintln!("postern: {what}: {n}");
        postern_control::tracking::import::import_sled(&dir, &tracking, &mut progress)
            .map_err(|e| Fatal(format!("import from {}: {e}", dir.display())))
    })
    .await
    .map_err(|e| Fatal(e.to_string()))??;
    println!(
        "imported into {describe}: {} messages ({} new), {} connections, {} TLS-RPT sessions, {} TLS-RPT reports built, {} received, {} MTA-STS policies, {} cursors",
        done.messages,
        done.new_messages,
        done.connections,
        done.tls_sessions,
        done.tls_reports,
        done.received_reports,
        done.sts_policies,
        done.cursors
    );
    Ok(())
}
