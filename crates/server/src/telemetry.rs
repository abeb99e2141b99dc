//! Logging: tracing with an env filter; `RUST_LOG` wins over `log.level`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests start many servers) are ignored.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for people: logs piped to files or tests stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
