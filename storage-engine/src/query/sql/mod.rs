//! The SQL front end: parses text with sqlparser (`GenericDialect`) and lowers it to the subset's
//! typed tree (`ast`). Everything outside the subset is an `SqlError` naming the construct; no
//! input can panic it (inputs are bounded in length and nesting).

mod ast;
mod parser;

pub use ast::*;
pub use parser::parse;

/// A statement outside the supported subset, or malformed SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
}

impl SqlError {
    pub(crate) fn new(message: impl Into<String>) -> SqlError {
        SqlError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQL error: {}", self.message)
    }
}

impl std::error::Error for SqlError {}
