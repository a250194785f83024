//! Query memory. Each query holds a `Reservation` against the node's `MemoryPool` and grows it as
//! its state grows — groups, rows collected for ORDER BY, the coordinator's merge and sort — so
//! it fails with `limit:` the moment it would pass its own cap or the node's budget, instead of
//! after the result is built. The reservation is returned when the query ends (dropped).
//!
//! Sizes are estimates of what the state holds (Arrow's own sizes for arrays, entry counts times
//! entry sizes for hash tables); they are meant to be within a small factor of the truth, which
//! is what a limit needs.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The node's memory for query state, shared by every core.
#[derive(Debug)]
pub struct MemoryPool {
    budget: u64,
    query_max: u64,
    used: AtomicU64,
}

impl MemoryPool {
    /// `budget` bounds every running query together; `query_max` each one.
    pub fn new(budget: u64, query_max: u64) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            budget,
            query_max,
            used: AtomicU64::new(0),
        })
    }

    /// A new, empty reservation for one query.
    pub fn reserve(self: &Arc<Self>) -> Arc<Reservation> {
        Arc::new(Reservation {
            pool: self.clone(),
            held: AtomicU64::new(0),
        })
    }

    /// Bytes reserved by running queries.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// What one query holds of the pool; shared by the cores running it.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    held: AtomicU64,
}

impl Reservation {
    /// Takes `bytes` more, or fails (taking nothing) when that passes the query's cap or the
    /// node's budget.
    pub fn grow(&self, bytes: u64) -> Result<()> {
        let pool = &self.pool;
        let held = self
            .held
            .fetch_add(bytes, Ordering::AcqRel)
            .saturating_add(bytes);
        if held > pool.query_max {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::LimitExceeded {
                what: "query memory",
                limit: pool.query_max,
                detail: format!(
                    "the query needs more than {held} bytes for its groups, rows or sort; add a filter, a LIMIT or fewer groups"
                ),
            });
        }
        let used = pool
            .used
            .fetch_add(bytes, Ordering::AcqRel)
            .saturating_add(bytes);
        if used > pool.budget {
            pool.used.fetch_sub(bytes, Ordering::AcqRel);
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Error::LimitExceeded {
                what: "the node's query memory",
                limit: pool.budget,
                detail: format!(
                    "running queries hold {} bytes and this one asked for {bytes} more; retry later",
                    used - bytes
                ),
            });
        }
        Ok(())
    }

    /// Returns `bytes` (at most what is held).
    pub fn shrink(&self, bytes: u64) {
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            let give = bytes.min(held);
            match self
                .held
                .compare_exchange(held, held - give, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.pool.used.fetch_sub(give, Ordering::AcqRel);
                    return;
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes this query holds.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool
            .used
            .fetch_sub(*self.held.get_mut(), Ordering::AcqRel);
    }
}

/// One piece of state's share of a reservation: `set` moves it to the state's current size.
#[derive(Debug, Default)]
pub struct Charge {
    charged: u64,
}

impl Charge {
    pub fn set(&mut self, reservation: &Reservation, bytes: u64) -> Result<()> {
        if bytes > self.charged {
            reservation.grow(bytes - self.charged)?;
        } else {
            reservation.shrink(self.charged - bytes);
        }
        self.charged = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_fails_at_its_cap_and_the_node_at_its_budget() {
        let pool = MemoryPool::new(1_000, 600);
        let a = pool.reserve();
        a.grow(500).unwrap();
        let error = a.grow(101).unwrap_err();
        assert_eq!(error.code(), "limit");
        assert!(error.to_string().contains("query memory"), "{error}");
        assert_eq!(a.held(), 500, "a refused growth takes nothing");
        let b = pool.reserve();
        b.grow(500).unwrap();
        let error = b.grow(1).unwrap_err();
        assert!(error.to_string().contains("node"), "{error}");
        assert_eq!(pool.used(), 1_000);
        drop(a);
        assert_eq!(pool.used(), 500, "an ended query returns what it held");
        b.grow(1).unwrap();
        let mut charge = Charge::default();
        charge.set(&b, 90).unwrap();
        charge.set(&b, 40).unwrap();
        assert_eq!(b.held(), 541);
        b.shrink(10_000);
        assert_eq!((b.held(), pool.used()), (0, 0));
    }
}
