//! Graceful shutdown and logging for the binaries.
//!
//! A server is handed a future that resolves when it should stop; it stops
//! accepting connections, lets requests in flight finish, and returns. This
//! module provides that future for the usual signals, and the one place
//! where every binary's log output (`--log-format text|json`) is set up.

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// How log lines are written: `--log-format text|json` of every binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`
    /// and the event's fields at the top level), for log collectors.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`.
    pub fn name(&self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// ```
    /// use tritontube_core::shutdown::LogFormat;
    /// assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    /// assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
    /// assert!("xml".parse::<LogFormat>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}: expected text or json")),
        }
    }
}

/// Installs a `tracing` subscriber writing to standard error in `format`,
/// filtered by `RUST_LOG` (default `info`). Text has colours only when
/// standard error is a terminal (a log redirected to a file stays plain);
/// JSON never has any.
pub fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// [`init_logging`] with another filter when `RUST_LOG` is not set
/// (`"warn"` for a command-line tool whose output is its answer).
pub fn init_logging_at(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already installed (a test
    // calling this twice, say): the first one stays.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
