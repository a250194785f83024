//! The bottom of the I/O path: the runtime (the only user of glommio: executors, direct files,
//! timers), the per-core pool of decoded pages, the per-core order of direct reads by IO shares,
//! the direct writer of Parquet files, and facts about the host.

pub mod buffer_pool;
pub mod crash;
pub mod direct_writer;
pub mod host;
pub mod io_shares;
pub mod runtime;
