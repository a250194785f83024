//! Answering a query: SQL to a plan, pruning by statistics, per-core scans with SIMD filter
//! kernels, grouped aggregation, and the memory each query may hold.

pub mod aggregate;
pub mod exec;
pub mod groups;
pub mod kernels;
pub mod memory;
pub mod plan;
pub mod prune;
pub mod sql;
