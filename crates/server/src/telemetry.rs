//! Logging: tracing with an env filter (`RUST_LOG` wins over `log.level`), as text or as one JSON
//! object per line (`log.format`), always to stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber once; later calls (tests start many servers) are ignored.
///
/// A failed write to stderr (the reader of a pipe went away) drops the line: the formatter's
/// habit of reporting its own errors with `eprintln!` would panic there and end the server, so it
/// is turned off.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match settings.format {
        LogFormat::Text => builder
            // Colour codes only for people: logs piped to files or tests stay plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
