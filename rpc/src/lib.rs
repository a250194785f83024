//! Tessera's Cap'n Proto RPC: the tenant-node server binding (`server`, `service`), token
//! verification (`auth`), metrics (`metrics`) and the client library (`client`). The protocol
//! itself lives in `tessera-schema`.

pub mod admission;
mod anti_entropy;
pub mod auth;
mod catch_up;
pub mod client;
pub mod cluster;
pub mod codes;
mod ipc_frames;
pub mod metrics;
pub mod node;
pub mod query_log;
pub mod quota;
pub mod result_cache;
pub mod server;
mod service;
pub mod stats;
pub mod tls;

pub use client::{Client, ClientError, ConnectOptions, QueryOutput, QueryStats, Session};
pub use node::Limits;
pub use result_cache::ResultCacheConfig;
pub use server::{Server, ServerConfig, ServerError, TlsFiles};
