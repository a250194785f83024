//! The `QueryStats` record of the schema, in one place: the server writes it into `done`, the
//! client reads it back. Its scan counters are the engine's own `ScanStats`.

use tessera_schema::tessera_capnp::query_stats;
use tessera_storage_engine::query::exec::ScanStats;

/// Counters of one query, as measured by the node that ran it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryStats {
    /// Rows sent to the client.
    pub rows_returned: u64,
    /// What the engine scanned and pruned.
    pub scan: ScanStats,
    /// Wall time on the server, from admission to the last batch.
    pub elapsed_micros: u64,
    /// Record batches and Arrow IPC bytes sent to the client.
    pub batches: u64,
    pub ipc_bytes: u64,
    /// Time from the call's arrival on its connection to taking a query slot.
    pub queued_micros: u64,
}

impl QueryStats {
    pub(crate) fn write(&self, mut out: query_stats::Builder<'_>) {
        let scan = &self.scan;
        out.set_rows_returned(self.rows_returned);
        out.set_rows_scanned(scan.rows_scanned);
        out.set_rows_total(scan.rows_total);
        out.set_rows_from_statistics(scan.rows_from_statistics);
        out.set_files_cached(scan.files_cached);
        out.set_bytes_read(scan.bytes_read);
        out.set_bytes_scanned(scan.bytes_scanned);
        out.set_files_total(scan.files_total);
        out.set_files_pruned(scan.files_pruned);
        out.set_row_groups_total(scan.row_groups_total);
        out.set_row_groups_pruned(scan.row_groups_pruned);
        out.set_pages_total(scan.pages_total);
        out.set_pages_pruned(scan.pages_pruned);
        out.set_pool_hits(scan.pool_hits);
        out.set_pool_misses(scan.pool_misses);
        out.set_elapsed_micros(self.elapsed_micros);
        out.set_batches(self.batches);
        out.set_ipc_bytes(self.ipc_bytes);
        out.set_queued_micros(self.queued_micros);
        out.set_partitions_total(scan.partitions_total);
        out.set_partitions_pruned(scan.partitions_pruned);
    }

    pub(crate) fn read(stats: query_stats::Reader<'_>) -> QueryStats {
        QueryStats {
            rows_returned: stats.get_rows_returned(),
            scan: ScanStats {
                files_total: stats.get_files_total(),
                files_pruned: stats.get_files_pruned(),
                row_groups_total: stats.get_row_groups_total(),
                row_groups_pruned: stats.get_row_groups_pruned(),
                pages_total: stats.get_pages_total(),
                pages_pruned: stats.get_pages_pruned(),
                rows_total: stats.get_rows_total(),
                rows_scanned: stats.get_rows_scanned(),
                rows_from_statistics: stats.get_rows_from_statistics(),
                files_cached: stats.get_files_cached(),
                bytes_read: stats.get_bytes_read(),
                bytes_scanned: stats.get_bytes_scanned(),
                pool_hits: stats.get_pool_hits(),
                pool_misses: stats.get_pool_misses(),
                partitions_total: stats.get_partitions_total(),
                partitions_pruned: stats.get_partitions_pruned(),
            },
            elapsed_micros: stats.get_elapsed_micros(),
            batches: stats.get_batches(),
            ipc_bytes: stats.get_ipc_bytes(),
            queued_micros: stats.get_queued_micros(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_survives_the_wire() {
        // Distinct values, so a field written into another's slot shows.
        let stats = QueryStats {
            rows_returned: 1,
            scan: ScanStats {
                files_total: 2,
                files_pruned: 3,
                row_groups_total: 4,
                row_groups_pruned: 5,
                pages_total: 6,
                pages_pruned: 7,
                rows_total: 8,
                rows_scanned: 9,
                rows_from_statistics: 10,
                files_cached: 19,
                bytes_read: 11,
                bytes_scanned: 12,
                pool_hits: 13,
                pool_misses: 14,
                partitions_total: 20,
                partitions_pruned: 21,
            },
            elapsed_micros: 15,
            batches: 16,
            ipc_bytes: 17,
            queued_micros: 18,
        };
        let mut message = capnp::message::Builder::new_default();
        stats.write(message.init_root());
        let reader = message.get_root_as_reader().unwrap();
        assert_eq!(QueryStats::read(reader), stats);
    }
}
