//! TEMPORARY until the parser lands.
mod ast;
pub use ast::*;
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
}
impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQL error: {}", self.message)
    }
}
impl std::error::Error for SqlError {}
pub fn parse(_sql: &str) -> Result<Statement, SqlError> {
    Err(SqlError {
        message: "parser not yet here".into(),
    })
}
