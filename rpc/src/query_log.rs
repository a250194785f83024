//! The node's recent queries: one log line each (info; warn when slower than the slow-query
//! threshold) and a bounded ring of records that the `query_stats` system table reads, so a
//! tenant can ask SQL about its own queries:
//! `SELECT query_id, partitions_scanned, partitions_pruned FROM query_stats WHERE execution_time > 30`.

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{Field, Schema};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tessera_storage_engine::table::manifest::ColumnDef;
use tessera_storage_engine::value::ColumnType;

/// The system table's name (reserved: no table may be created under it).
pub const TABLE: &str = tessera_storage_engine::table::manifest::QUERY_STATS_TABLE;

/// One finished query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryRecord {
    /// Unique on the node: its start-up id and a sequence number.
    pub query_id: String,
    pub tenant: String,
    pub sql: String,
    /// When the call arrived, microseconds since the Unix epoch.
    pub started_at_micros: i64,
    /// Seconds from arrival to the last batch (queueing included).
    pub execution_seconds: f64,
    pub rows: u64,
    pub bytes_scanned: u64,
    pub files_scanned: u64,
    pub files_pruned: u64,
    pub partitions_scanned: u64,
    pub partitions_pruned: u64,
    /// `ok`, or the error's code (`sql`, `limit`, `overloaded`, `cancelled`, ...).
    pub status: String,
    /// The error's message, for a failed query.
    pub error: Option<String>,
}

/// Bounded, shared by every core of the node; the lock is held to push or copy a record.
pub struct QueryLog {
    capacity: AtomicUsize,
    /// Queries at least this slow are logged at warn, in microseconds.
    slow_micros: AtomicU64,
    boot: u32,
    next: AtomicU64,
    ring: Mutex<VecDeque<Arc<QueryRecord>>>,
    /// The node the queries ran on, as the `node` column shows it (its cluster node id, or
    /// the address it serves on).
    node: String,
}

impl QueryLog {
    pub fn new(capacity: usize, slow: Duration, node: String) -> QueryLog {
        let boot = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        QueryLog {
            capacity: AtomicUsize::new(capacity),
            slow_micros: AtomicU64::new(slow.as_micros() as u64),
            boot,
            next: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::new()),
            node,
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<QueryRecord>>> {
        // A panic while holding the lock cannot leave the ring half-changed.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new query id.
    pub fn next_id(&self) -> String {
        format!(
            "{:08x}-{}",
            self.boot,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sets how many records are kept (older ones go first) and the slow-query threshold;
    /// both may change while the node serves (SIGHUP).
    pub fn configure(&self, capacity: usize, slow: Duration) {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.slow_micros
            .store(slow.as_micros() as u64, Ordering::Relaxed);
        let mut ring = self.lock();
        while ring.len() > capacity {
            ring.pop_front();
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Logs a finished query and keeps its record.
    pub fn record(&self, record: QueryRecord) {
        let slow =
            record.execution_seconds * 1e6 >= self.slow_micros.load(Ordering::Relaxed) as f64;
        macro_rules! line {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    query_id = %record.query_id,
                    tenant = %record.tenant,
                    duration_ms = record.execution_seconds * 1e3,
                    rows = record.rows,
                    bytes_scanned = record.bytes_scanned,
                    files_scanned = record.files_scanned,
                    files_pruned = record.files_pruned,
                    status = %record.status,
                    error = record.error.as_deref().unwrap_or(""),
                    sql = %record.sql,
                    $message
                )
            };
        }
        if slow {
            line!(warn, "slow query");
        } else {
            line!(info, "query");
        }
        let capacity = self.capacity();
        if capacity == 0 {
            return;
        }
        let mut ring = self.lock();
        while ring.len() >= capacity {
            ring.pop_front();
        }
        ring.push_back(Arc::new(record));
    }

    /// The system table's columns.
    pub fn columns() -> Vec<ColumnDef> {
        let column = |name: &str, column_type| ColumnDef {
            name: name.to_owned(),
            column_type,
            nullable: name == "error",
        };
        vec![
            column("query_id", ColumnType::Utf8),
            column("tenant", ColumnType::Utf8),
            column("sql", ColumnType::Utf8),
            column("started_at", ColumnType::Timestamp),
            column("execution_time", ColumnType::Float64),
            column("rows", ColumnType::Int64),
            column("bytes_scanned", ColumnType::Int64),
            column("files_scanned", ColumnType::Int64),
            column("files_pruned", ColumnType::Int64),
            column("partitions_scanned", ColumnType::Int64),
            column("partitions_pruned", ColumnType::Int64),
            column("status", ColumnType::Utf8),
            column("error", ColumnType::Utf8),
            column("node", ColumnType::Utf8),
        ]
    }

    /// `tenant`'s records (every tenant's for `None`: an operator's view), oldest first, as
    /// the system table's rows.
    pub fn table(&self, tenant: Option<&str>) -> RecordBatch {
        let records: Vec<Arc<QueryRecord>> = self
            .lock()
            .iter()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .cloned()
            .collect();
        let int = |f: fn(&QueryRecord) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                records.iter().map(|r| f(r).min(i64::MAX as u64) as i64),
            ))
        };
        let text = |f: fn(&QueryRecord) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(records.iter().map(|r| f(r))))
        };
        let columns: Vec<ArrayRef> = vec![
            text(|r| &r.query_id),
            text(|r| &r.tenant),
            text(|r| &r.sql),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                records.iter().map(|r| r.started_at_micros),
            )),
            Arc::new(Float64Array::from_iter_values(
                records.iter().map(|r| r.execution_seconds),
            )),
            int(|r| r.rows),
            int(|r| r.bytes_scanned),
            int(|r| r.files_scanned),
            int(|r| r.files_pruned),
            int(|r| r.partitions_scanned),
            int(|r| r.partitions_pruned),
            text(|r| &r.status),
            Arc::new(StringArray::from_iter(
                records.iter().map(|r| r.error.as_deref()),
            )),
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|_| self.node.as_str()),
            )),
        ];
        let fields: Vec<Field> = Self::columns()
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.to_arrow(), c.nullable))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .expect("columns match the system table's schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log: &QueryLog, tenant: &str, seconds: f64) -> QueryRecord {
        QueryRecord {
            query_id: log.next_id(),
            tenant: tenant.into(),
            sql: "SELECT 1".into(),
            started_at_micros: 1_700_000_000_000_000,
            execution_seconds: seconds,
            rows: 1,
            bytes_scanned: 2,
            files_scanned: 3,
            files_pruned: 4,
            partitions_scanned: 5,
            partitions_pruned: 6,
            status: "ok".into(),
            error: None,
        }
    }

    #[test]
    fn keeps_the_newest_records_and_shows_a_tenant_only_its_own() {
        let log = QueryLog::new(3, Duration::from_secs(1), "n1".into());
        for i in 0..5 {
            log.record(record(&log, if i % 2 == 0 { "a" } else { "b" }, i as f64));
        }
        // Kept: queries 2, 3, 4 (tenants a, b, a).
        let a = log.table(Some("a"));
        assert_eq!(a.num_rows(), 2);
        let times = a
            .column_by_name("execution_time")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(times.values(), &[2.0, 4.0]);
        let nodes = a
            .column_by_name("node")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(nodes.iter().all(|n| n == Some("n1")));
        assert_eq!(log.table(Some("b")).num_rows(), 1);
        assert_eq!(log.table(Some("c")).num_rows(), 0);
        // An operator sees every tenant's.
        assert_eq!(log.table(None).num_rows(), 3);
        log.configure(1, Duration::from_secs(1));
        assert_eq!(log.table(Some("a")).num_rows(), 1);
        log.configure(0, Duration::from_secs(1));
        log.record(record(&log, "a", 1.0));
        assert_eq!(log.table(Some("a")).num_rows(), 0);
    }

    #[test]
    fn ids_are_unique() {
        let log = QueryLog::new(10, Duration::from_secs(1), "n1".into());
        assert_ne!(log.next_id(), log.next_id());
    }
}
