//! Tables on disk: manifests (the atomic list of a table's files), the Parquet reader and
//! writer, input sources, column statistics, verification, and rewriting files in place
//! (compaction and retention).

pub mod digest;
pub mod maintenance;
pub mod manifest;
pub mod quota;
pub mod reader;
pub mod replica;
pub mod source;
pub mod stats;
pub mod verify;
pub mod writer;
