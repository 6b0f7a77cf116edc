//! The `tracing` subscriber of both binaries.

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), lines on stderr
/// (stdout stays free for output a caller may pipe), ANSI colours only when stderr is a
/// terminal so that log files and collectors get plain text. Call once, first thing in `main`.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
