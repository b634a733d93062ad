//! The proxy alone: `flotilla-proxy [FLAGS]` is `flotilla proxy run [FLAGS]`.
#![forbid(unsafe_code)]

use clap::Parser;

/// Flotilla's zero-downtime host proxy
#[derive(Debug, Parser)]
#[command(name = "flotilla-proxy", version)]
struct Cli {
    #[command(flatten)]
    run: flotilla_proxy::RunArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match cli.run.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-proxy: error: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    match flotilla_proxy::run(config, flotilla_proxy::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-proxy: error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
