//! The engine's one error type. Variants name the thing that failed (file, column, construct) so
//! the CLI and RPC layers can print a message a user can act on. Programmer errors are panics;
//! everything that comes from files, users or the OS is an `Error`.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sql(#[from] crate::query::sql::SqlError),
    #[error("query error: {0}")]
    Plan(String),
    #[error("table {tenant}/{table} does not exist")]
    NoSuchTable { tenant: String, table: String },
    /// No space left (ENOSPC, or EDQUOT): what was being written failed and nothing
    /// acknowledged was touched; writes succeed again once space is freed.
    #[error("disk full: no space left to write {path}")]
    DiskFull { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt or unreadable Parquet file {path}: {message}")]
    CorruptFile { path: PathBuf, message: String },
    #[error("file {path} does not match the table schema: {message}")]
    SchemaMismatch { path: PathBuf, message: String },
    #[error("corrupt manifest {path}: {message}")]
    CorruptManifest { path: PathBuf, message: String },
    #[error("import error: {0}")]
    Import(String),
    #[error("corrupt write-ahead log {path} at offset {offset}: {message}")]
    CorruptWal {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    /// The node cannot take this request now; the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what} exceeds its limit of {limit}: {detail}")]
    LimitExceeded {
        what: &'static str,
        limit: u64,
        detail: String,
    },
    #[error("engine is shutting down")]
    ShuttingDown,
    /// The consumer of a streamed result stopped the query (e.g. its client went away).
    #[error("query cancelled: {0}")]
    Cancelled(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable error code the RPC protocol reports this error under (see tessera.capnp).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Sql(_) | Error::Plan(_) => "sql",
            Error::NoSuchTable { .. } => "not_found",
            Error::Io { .. } | Error::DiskFull { .. } => "io",
            Error::CorruptFile { .. }
            | Error::SchemaMismatch { .. }
            | Error::CorruptManifest { .. }
            | Error::CorruptWal { .. } => "corrupt",
            Error::Import(_) | Error::Config(_) => "invalid",
            Error::LimitExceeded { .. } => "limit",
            Error::ShuttingDown | Error::Unavailable(_) => "unavailable",
            Error::Cancelled(_) => "cancelled",
            Error::Internal(_) => "internal",
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        // The kind survives glommio's error wrapping; the raw code does not.
        let full = matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            || matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
        if full {
            return Error::DiskFull { path: path.into() };
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::CorruptFile {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub fn plan(message: impl Into<String>) -> Self {
        Error::Plan(message.into())
    }
}

impl From<crate::io::runtime::JobError> for Error {
    fn from(error: crate::io::runtime::JobError) -> Error {
        match error {
            crate::io::runtime::JobError::Panicked(message) => {
                Error::Internal(format!("a task panicked and its query failed: {message}"))
            }
            crate::io::runtime::JobError::Stopped => Error::ShuttingDown,
        }
    }
}
