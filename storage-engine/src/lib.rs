//! Tessera's tenant-node engine: Parquet tables on local disk, scanned thread-per-core with direct
//! I/O, a per-core buffer pool of decoded pages, statistics and page-index pruning, SIMD filter
//! kernels, grouped aggregation, and streaming ingestion through a per-core write-ahead log.
//! `Engine` is the entry point; `TableWriter` writes tables. See ARCHITECTURE.md for the map.
//!
//! Layers, each importing only those below it: `engine` (executors, a query across cores),
//! `query` (SQL, plans, scans, aggregation), `ingest` (WAL, buffers, flush), `table` (manifests,
//! Parquet reading and writing), `io` (the runtime, direct files, the page pool), and at the
//! bottom `value`, `arrays` and `error`.

pub mod arrays;
pub mod engine;
pub mod error;
pub mod gen;
pub mod ingest;
pub mod io;
pub mod query;
pub mod table;
pub mod value;

pub use engine::{Engine, EngineConfig, QueryResult, QueryStats};
pub use error::{Error, Result};
