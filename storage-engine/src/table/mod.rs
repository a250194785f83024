//! Tables on disk: manifests (the atomic list of a table's files), the Parquet reader and
//! writer, input sources, column statistics, and verification.

pub mod manifest;
pub mod reader;
pub mod source;
pub mod stats;
pub mod verify;
pub mod writer;
