//! Answering a query: SQL to a plan, pruning by statistics, per-core scans with SIMD filter
//! kernels, grouped aggregation, the memory each query may hold, and partial results of
//! distributed queries as Arrow.

pub mod aggregate;
pub mod exec;
pub mod groups;
pub mod kernels;
pub mod memory;
pub mod partial;
pub mod plan;
pub mod prune;
pub mod sql;
