//! The bottom of the I/O path: the runtime (the only user of glommio: executors, direct files,
//! timers), the per-core pool of decoded pages, and facts about the host.

pub mod buffer_pool;
pub mod crash;
pub mod host;
pub mod runtime;
