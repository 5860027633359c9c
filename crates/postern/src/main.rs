//! The `postern` binary: parses flags, builds configuration and calls the components' `run`.

#![forbid(unsafe_code)]

mod cli;
mod control;

use std::process::ExitCode;

use clap::Parser;

/// A startup problem: one line naming what is wrong, and exit code 2 (PRODUCT.md 6).
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
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "postern: {} (see postern --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Dev(args) => control::dev(args).await,
            cli::Command::Control(args) => control::control(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("postern: {message}");
            ExitCode::from(2)
        }
    }
}
