//! The cluster coordinator: the catalog (PostgreSQL, or an embedded SQLite file for one
//! machine, behind one trait with the same migrations), the coordinator process (membership
//! and the leader lease, `server`), and the client side nodes and operators use (`client`). It
//! is never in a query's or a write's data path.

pub mod catalog;
pub mod client;
pub mod metrics;
pub mod placement;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use server::{Coordinator, CoordinatorConfig};
