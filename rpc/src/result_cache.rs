//! The shared final-result cache (`--redis-url`, off by default). A query's whole result, as
//! the Arrow IPC stream it was sent as, is kept in Redis under the tenant, the query as parsed
//! and the version of the data it read (`CoreContext::data_version`: the table's incarnation,
//! manifest version and buffered log positions). Nodes sharing one Redis share results, and an
//! entry is never stale: data that changes gets a new version, hence a new key; old keys expire.
//! A result over `max_result_bytes` is not stored.
//!
//! Redis is best effort: a failed call is counted (`result_cache_errors`) and the query runs as
//! it would without the cache; after a failure the cache is skipped for `RETRY_AFTER`, so a
//! Redis that is down costs one timeout per interval, not one per query. Calls run on the core
//! itself, over connections of the core's own (`runtime::TcpConnection`), each bounded by a
//! timeout: the `redis` crate parses the URL and encodes commands, and the few replies used
//! (status, error, bulk string) are read here.

use crate::metrics::Metrics;
use futures::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
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
/// Bytes of a stored value besides its IPC stream.
const HEADER_BYTES: usize = 20;
/// Longest status or error line read from Redis.
const LINE_MAX: u64 = 64 << 10;

pub struct ResultCache {
    address: SocketAddr,
    /// AUTH and SELECT, as the URL asks, sent on every new connection.
    handshake: Vec<Vec<u8>>,
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
        let mut out = Vec::with_capacity(HEADER_BYTES + self.ipc.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&self.batches.to_le_bytes());
        out.extend_from_slice(&self.ipc);
        out
    }

    /// `None` for a value this layout did not write. The IPC bytes are checked again as the
    /// client decodes them, like any result.
    fn decode(mut bytes: Vec<u8>) -> Option<CachedResult> {
        let header = bytes.get(..HEADER_BYTES)?;
        if &header[..4] != MAGIC {
            return None;
        }
        let rows = u64::from_le_bytes(header[4..12].try_into().ok()?);
        let batches = u64::from_le_bytes(header[12..20].try_into().ok()?);
        let ipc = bytes.split_off(HEADER_BYTES);
        Some(CachedResult { rows, batches, ipc })
    }
}

thread_local! {
    /// This core's idle connections.
    static IDLE: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

impl ResultCache {
    /// Checks the URL and resolves its host; Redis itself is first reached by the first query.
    pub fn new(config: ResultCacheConfig) -> Result<ResultCache, String> {
        let bad = |why: String| format!("--redis-url {}: {why}", config.url);
        let client = redis::Client::open(config.url.as_str()).map_err(|e| bad(e.to_string()))?;
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(bad("only redis:// over TCP is supported".into()));
        };
        let address = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| bad(format!("{host} has no address")))?;
        let settings = info.redis_settings();
        let mut handshake = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            handshake.push(auth.arg(password).get_packed_command());
        }
        if settings.db() != 0 {
            handshake.push(redis::cmd("SELECT").arg(settings.db()).get_packed_command());
        }
        Ok(ResultCache {
            address,
            handshake,
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

    pub async fn get(&self, key: &str, metrics: &Metrics) -> Option<CachedResult> {
        let command = redis::cmd("GET").arg(key).get_packed_command();
        let hit = match self.call(metrics, &command).await {
            Some(Reply::Bulk(Some(value))) => CachedResult::decode(value),
            _ => None,
        };
        match &hit {
            Some(_) => metrics.result_cache_hits.inc(),
            None => metrics.result_cache_misses.inc(),
        };
        hit
    }

    pub async fn put(&self, key: &str, result: &CachedResult, metrics: &Metrics) {
        if result.ipc.len() > self.config.max_result_bytes {
            return;
        }
        let command = redis::cmd("SET")
            .arg(key)
            .arg(result.encode())
            .arg("EX")
            .arg(self.config.ttl.as_secs().max(1))
            .get_packed_command();
        if let Some(Reply::Status(_)) = self.call(metrics, &command).await {
            metrics.result_cache_stores.inc();
        }
    }

    /// Sends `command` on one of this core's connections (a new one if none is idle) and reads
    /// the reply, within the timeout. `None` when Redis failed or is being skipped.
    async fn call(&self, metrics: &Metrics, command: &[u8]) -> Option<Reply> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let idle = IDLE.with(|idle| idle.borrow_mut().pop());
        let value_max = (self.config.max_result_bytes + HEADER_BYTES) as u64;
        let exchange = async {
            let mut connection = match idle {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            let reply = connection.request(command, value_max).await?;
            Ok::<_, String>((connection, reply))
        };
        let outcome = runtime::timeout(self.config.timeout, exchange)
            .await
            .unwrap_or_else(|| {
                Err(format!(
                    "no answer within {} ms",
                    self.config.timeout.as_millis()
                ))
            });
        match outcome {
            Ok((connection, reply)) => {
                // A connection whose call failed or timed out may be mid-reply: dropped.
                IDLE.with(|idle| {
                    let mut idle = idle.borrow_mut();
                    if idle.len() < IDLE_MAX {
                        idle.push(connection);
                    }
                });
                Some(reply)
            }
            Err(e) => {
                metrics.result_cache_errors.inc();
                let until = self.started.elapsed() + RETRY_AFTER;
                let previous = self
                    .skip_until_ms
                    .swap(until.as_millis() as u64, Ordering::Relaxed);
                // One line per outage, not per query.
                if previous <= now_ms {
                    tracing::warn!(
                        "result cache: Redis at {} failed ({e}); skipping it for {} s",
                        self.address,
                        RETRY_AFTER.as_secs()
                    );
                }
                None
            }
        }
    }

    async fn connect(&self) -> Result<Connection, String> {
        let stream = runtime::TcpConnection::connect(self.address)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut connection = Connection {
            stream: BufReader::new(stream),
        };
        for command in &self.handshake {
            connection.request(command, 0).await?;
        }
        Ok(connection)
    }
}

struct Connection {
    stream: BufReader<runtime::TcpConnection>,
}

/// The replies the cache's commands get (an error reply is an `Err`).
#[derive(Debug, PartialEq)]
enum Reply {
    /// `+OK` and the like.
    Status(String),
    /// A bulk string; `None` for a missing key.
    Bulk(Option<Vec<u8>>),
}

impl Connection {
    async fn request(&mut self, command: &[u8], value_max: u64) -> Result<Reply, String> {
        let io = |e: std::io::Error| format!("connection: {e}");
        self.stream.get_mut().write_all(command).await.map_err(io)?;
        self.stream.get_mut().flush().await.map_err(io)?;
        read_reply(&mut self.stream, value_max).await
    }
}

/// Reads one reply of RESP (status, error or bulk string; anything else is an error). A bulk
/// string longer than `value_max` is refused.
async fn read_reply<R: AsyncBufRead + Unpin>(
    stream: &mut R,
    value_max: u64,
) -> Result<Reply, String> {
    let io = |e: std::io::Error| format!("connection: {e}");
    let mut line = Vec::new();
    (&mut *stream)
        .take(LINE_MAX)
        .read_until(b'\n', &mut line)
        .await
        .map_err(io)?;
    let text = line
        .strip_suffix(b"\r\n")
        .ok_or("Redis closed the connection or sent a line without its end")?;
    let (&kind, rest) = text.split_first().ok_or("Redis sent an empty line")?;
    let rest = String::from_utf8_lossy(rest);
    match kind {
        b'+' => Ok(Reply::Status(rest.into_owned())),
        b'-' => Err(format!("Redis: {rest}")),
        b'$' => {
            let length: i64 = rest
                .parse()
                .map_err(|_| format!("Redis sent a bad length {rest:?}"))?;
            if length < 0 {
                return Ok(Reply::Bulk(None));
            }
            if length as u64 > value_max {
                return Err(format!("Redis sent a value of {length} bytes"));
            }
            let mut value = vec![0; length as usize + 2];
            stream.read_exact(&mut value).await.map_err(io)?;
            if !value.ends_with(b"\r\n") {
                return Err("Redis sent a value without its end".into());
            }
            value.truncate(length as usize);
            Ok(Reply::Bulk(Some(value)))
        }
        other => Err(format!(
            "Redis sent an unexpected reply type {:?}",
            other as char
        )),
    }
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
    fn a_bad_url_is_refused_at_start_and_a_good_one_asks_for_its_database() {
        assert!(ResultCache::new(ResultCacheConfig::new("http://nope")).is_err());
        assert!(ResultCache::new(ResultCacheConfig::new("redis+unix:///tmp/r.sock")).is_err());
        let plain = ResultCache::new(ResultCacheConfig::new("redis://127.0.0.1:6379/0")).unwrap();
        assert!(plain.handshake.is_empty());
        let secured =
            ResultCache::new(ResultCacheConfig::new("redis://u:p@127.0.0.1:6379/3")).unwrap();
        assert_eq!(
            secured.handshake,
            vec![
                b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n".to_vec(),
                b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n".to_vec()
            ]
        );
    }

    fn read(bytes: &[u8], value_max: u64) -> Result<Reply, String> {
        futures::executor::block_on(read_reply(&mut &bytes[..], value_max))
    }

    #[test]
    fn replies_are_read_and_bad_ones_refused() {
        assert_eq!(read(b"+OK\r\n", 10), Ok(Reply::Status("OK".into())));
        assert_eq!(read(b"$-1\r\n", 10), Ok(Reply::Bulk(None)));
        assert_eq!(
            read(b"$3\r\nabc\r\n", 10),
            Ok(Reply::Bulk(Some(b"abc".to_vec())))
        );
        assert!(read(b"-ERR wrong\r\n", 10)
            .unwrap_err()
            .contains("ERR wrong"));
        for bad in [
            &b"$11\r\n"[..],
            b"$3\r\nab",
            b"$3\r\nabcd\r\n",
            b"+OK",
            b"",
            b":1\r\n",
            b"$x\r\n",
        ] {
            assert!(read(bad, 10).is_err(), "{bad:?}");
        }
    }
}
