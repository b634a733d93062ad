//! The process-wide helpers every long-running command shares, written once: tracing setup
//! and the shutdown signal.

/// Logs to stderr, `RUST_LOG` or `default` as the filter, colour only when stderr is a
/// terminal and `NO_COLOR` is unset. sled reports its own failures through the `log` crate as raw lines; the event
/// log turns them into typed errors, so they are not shown twice.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("{default},sled=off").into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the proxy's, so the CLI and the proxy's standalone
/// binary share one definition.
pub use flotilla_proxy::shutdown_signal;
