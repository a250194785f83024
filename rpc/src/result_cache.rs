//! The shared final-result cache (`--redis-url`, off by default). A query's whole result, as
//! the Arrow IPC stream it was sent as, is kept in Redis under the tenant, the query as parsed
//! and the version of the data it read (`CoreContext::data_version`: the table's incarnation,
//! manifest version and buffered log positions). Nodes sharing one Redis share results, and an
//! entry is never stale: data that changes gets a new version, hence a new key; old keys expire.
//! A result over `max_result_bytes` is not stored.
//!
//! Redis is best effort: a failed call is counted (`result_cache_errors`) and the query runs as
//! it would without the cache; after a failure the cache is skipped for `RETRY_AFTER`, so a
//! Redis that is down costs one timeout per interval, not one per query. Calls are blocking
//! (the `redis` crate's async client needs another runtime): they run on the core's blocking
//! thread with a short timeout, over connections kept per core.

use crate::metrics::Metrics;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_storage_engine::io::runtime;

#[derive(Clone, Debug)]
pub struct ResultCacheConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// How long an entry lives.
    pub ttl: Duration,
    /// Largest result (Arrow IPC bytes) stored.
    pub max_result_bytes: usize,
    /// Connect, read and write timeout of each call.
    pub timeout: Duration,
}

impl ResultCacheConfig {
    pub fn new(url: impl Into<String>) -> ResultCacheConfig {
        ResultCacheConfig {
            url: url.into(),
            ttl: Duration::from_secs(300),
            max_result_bytes: 4 << 20,
            timeout: Duration::from_millis(100),
        }
    }
}

/// After a failed call the cache is skipped for this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Idle connections kept per core.
const IDLE_MAX: usize = 4;
/// Leads every stored value (the layout's version).
const MAGIC: &[u8; 4] = b"TRC1";

pub struct ResultCache {
    client: redis::Client,
    config: ResultCacheConfig,
    started: Instant,
    /// Milliseconds since `started` before which the cache is skipped (after a failure).
    skip_until_ms: AtomicU64,
}

/// A stored result.
#[derive(Debug, PartialEq)]
pub struct CachedResult {
    pub rows: u64,
    pub batches: u64,
    /// The whole Arrow IPC stream (schema, batches, end marker).
    pub ipc: Vec<u8>,
}

impl CachedResult {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.ipc.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.batches.to_le_bytes());
        out.extend_from_slice(&self.ipc);
        out
    }

    /// `None` for a value this layout did not write. The IPC bytes are checked again as the
    /// client decodes them, like any result.
    fn decode(mut bytes: Vec<u8>) -> Option<CachedResult> {
        let header = bytes.get(..20)?;
        if &header[..4] != MAGIC {
            return None;
        }
        let rows = u64::from_le_bytes(header[4..12].try_into().ok()?);
        let batches = u64::from_le_bytes(header[12..20].try_into().ok()?);
        let ipc = bytes.split_off(20);
        Some(CachedResult { rows, batches, ipc })
    }
}

thread_local! {
    /// This core's idle connections.
    static IDLE: RefCell<Vec<redis::Connection>> = const { RefCell::new(Vec::new()) };
}

impl ResultCache {
    /// Checks the URL; Redis itself is first reached by the first query.
    pub fn new(config: ResultCacheConfig) -> Result<ResultCache, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("--redis-url {}: {e}", config.url))?;
        Ok(ResultCache {
            client,
            config,
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
        })
    }

    pub fn max_result_bytes(&self) -> usize {
        self.config.max_result_bytes
    }

    /// The key of `query` (the parsed statement, normalised) run by `tenant` on data of
    /// `version`.
    pub fn key(tenant: &str, version: &str, query: &str) -> String {
        // Tenant names and versions hold no ':'; the query, last, may.
        format!("tessera:result:v1:{tenant}:{version}:{query}")
    }

    pub async fn get(&self, key: String, metrics: &Metrics) -> Option<CachedResult> {
        let value = self
            .call(metrics, move |connection| {
                redis::cmd("GET")
                    .arg(&key)
                    .query::<Option<Vec<u8>>>(connection)
            })
            .await
            .flatten();
        match value.and_then(CachedResult::decode) {
            Some(result) => {
                metrics.result_cache_hits.inc();
                Some(result)
            }
            None => {
                metrics.result_cache_misses.inc();
                None
            }
        }
    }

    pub async fn put(&self, key: String, result: &CachedResult, metrics: &Metrics) {
        if result.ipc.len() > self.config.max_result_bytes {
            return;
        }
        let (value, ttl) = (result.encode(), self.config.ttl.as_secs().max(1));
        let stored = self
            .call(metrics, move |connection| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("EX")
                    .arg(ttl)
                    .query::<()>(connection)
            })
            .await;
        if stored.is_some() {
            metrics.result_cache_stores.inc();
        }
    }

    /// Runs `command` on one of this core's connections (a new one if none is idle) on the
    /// blocking thread. `None` when Redis failed or is being skipped.
    async fn call<T: Send + 'static>(
        &self,
        metrics: &Metrics,
        command: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
    ) -> Option<T> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let idle = IDLE.with(|idle| idle.borrow_mut().pop());
        let (client, timeout) = (self.client.clone(), self.config.timeout);
        let (connection, outcome) = runtime::spawn_blocking(move || {
            let mut connection = match idle {
                Some(connection) => connection,
                None => match connect(&client, timeout) {
                    Ok(connection) => connection,
                    Err(e) => return (None, Err(e)),
                },
            };
            match command(&mut connection) {
                Ok(value) => (Some(connection), Ok(value)),
                // A connection that failed a call may be in any state: dropped.
                Err(e) => (None, Err(e)),
            }
        })
        .await;
        if let Some(connection) = connection {
            IDLE.with(|idle| {
                let mut idle = idle.borrow_mut();
                if idle.len() < IDLE_MAX {
                    idle.push(connection);
                }
            });
        }
        match outcome {
            Ok(value) => Some(value),
            Err(e) => {
                metrics.result_cache_errors.inc();
                let until = self.started.elapsed() + RETRY_AFTER;
                let previous = self
                    .skip_until_ms
                    .swap(until.as_millis() as u64, Ordering::Relaxed);
                // One line per outage, not per query.
                if previous <= now_ms {
                    eprintln!(
                        "result cache: Redis at {} failed ({e}); skipping it for {} s",
                        self.config.url,
                        RETRY_AFTER.as_secs()
                    );
                }
                None
            }
        }
    }
}

fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_and_foreign_ones_are_misses() {
        let result = CachedResult {
            rows: 7,
            batches: 2,
            ipc: vec![1, 2, 3],
        };
        assert_eq!(CachedResult::decode(result.encode()), Some(result));
        assert_eq!(CachedResult::decode(b"TRC1short".to_vec()), None);
        assert_eq!(CachedResult::decode(vec![0; 40]), None);
    }

    #[test]
    fn a_bad_url_is_refused_at_start() {
        assert!(ResultCache::new(ResultCacheConfig::new("http://nope")).is_err());
        assert!(ResultCache::new(ResultCacheConfig::new("redis://127.0.0.1:6379/0")).is_ok());
    }
}
