//! The `xrudp` binary: parses the command line, sets up logging, runs, maps errors to
//! a message and a non-zero exit status.

use clap::Parser as _;

use tracing_subscriber::{
    filter::Targets, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// The log filter from RUST_LOG (`LEVEL` or `TARGET=LEVEL`, comma-separated, e.g.
/// `warn,xrudp=debug`), `info` when unset; a value that does not parse is named on stderr
/// and `info` is used.
///
/// `Targets` rather than `EnvFilter`: the latter's span and field filters bring a regex
/// engine, about a fifth of the binary's text, which stays resident in every engine.
fn log_filter() -> Targets {
    let info = Targets::new().with_default(tracing::Level::INFO);
    match std::env::var("RUST_LOG") {
        Err(_) => info,
        Ok(v) if v.trim().is_empty() => info,
        Ok(v) => v.parse().unwrap_or_else(|e| {
            eprintln!(
                "warning: RUST_LOG={v:?} is not LEVEL or TARGET=LEVEL,...: {e}; logging at info"
            );
            info
        }),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(log_filter())
        .init();
    let args = match xrudp::cli::expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = xrudp::cli::Cli::parse_from(args);
    match xrudp::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
