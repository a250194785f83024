//! Tessera's tenant-node engine: Parquet tables on local disk, scanned thread-per-core with direct
//! I/O, a per-core buffer pool of decoded pages, statistics and page-index pruning, SIMD filter
//! kernels, and grouped aggregation. `Engine` is the entry point; `TableWriter` writes tables.
//! See ARCHITECTURE.md for the map.

pub mod aggregate;
pub mod arrays;
pub mod buffer_pool;
pub mod engine;
pub mod error;
pub mod exec;
pub mod gen;
pub mod host;
pub mod ingest;
pub mod kernels;
pub mod manifest;
pub mod memory;
pub mod plan;
pub mod prune;
pub mod reader;
pub mod runtime;
pub mod source;
pub mod sql;
pub mod stats;
pub mod value;
pub mod verify;
pub mod writer;

pub use engine::{Engine, EngineConfig, QueryResult, QueryStats};
pub use error::{Error, Result};
