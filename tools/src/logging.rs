//! Logs through `tracing`: human text on a terminal, JSON lines otherwise (journald, files), to
//! standard error. The level filter can be replaced while the process runs (SIGHUP).

use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

/// Changes the level filter of the installed logger.
pub struct Logger {
    handle: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG was set: it wins over the configured level, then and on reload.
    from_env: bool,
}

/// A filter from `level` (e.g. `info`, or `info,tessera_rpc=debug`). A directive without `=`
/// must be a level: `EnvFilter` would take a misspelt one (`inof`) for a target name.
fn filter(level: &str) -> Result<EnvFilter, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if let Some(bad) = level
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()))
    {
        return Err(format!(
            "log level {level:?}: {bad:?} is not one of {LEVELS:?} (or target=level)"
        ));
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("log level {level:?}: {e}"))
}

/// Installs the process's logger, once. `RUST_LOG`, when set, overrides `level`.
pub fn init(level: &str, format: Format) -> Result<Logger, String> {
    let from_env = std::env::var("RUST_LOG").is_ok_and(|v| !v.is_empty());
    let initial = if from_env {
        EnvFilter::from_default_env()
    } else {
        filter(level)?
    };
    let (filter_layer, handle) = reload::Layer::new(initial);
    let json = match format {
        Format::Json => true,
        Format::Text => false,
        Format::Auto => !std::io::stderr().is_terminal(),
    };
    let output = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init()
        .map_err(|e| format!("installing the logger: {e}"))?;
    Ok(Logger { handle, from_env })
}

impl Logger {
    /// Replaces the level filter; false (nothing changed) when RUST_LOG decides it.
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let filter = filter(level)?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("changing the log level: {e}"))?;
        Ok(true)
    }
}

/// Checks a level text without installing anything.
pub fn check_level(level: &str) -> Result<(), String> {
    filter(level).map(drop)
}
