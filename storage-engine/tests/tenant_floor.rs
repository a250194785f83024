//! A tenant's buffer-pool floor: another tenant scanning more than the pool holds cannot evict
//! its pages below the floor, so its next query reads nothing from disk; without a floor the
//! same scans push its pages out. The floor and shares reach every core (`apply_quota`).

mod support;

use tessera_storage_engine::table::quota::TenantQuota;
use tessera_storage_engine::Engine;

const QUIET_SQL: &str = "SELECT category, SUM(amount) FROM events GROUP BY category";
const NOISY_SQL: &str = "SELECT SUM(amount), SUM(user_id), MAX(id) FROM events";

fn apply(engine: &Engine, tenant: &str, quota: TenantQuota) {
    let tenant = tenant.to_owned();
    futures::executor::block_on(engine.on_core(0, move |context| async move {
        context.apply_quota(&tenant, &quota).await
    }))
    .unwrap();
}

/// Bytes the quiet tenant's query reads from disk after the noisy tenant's scans.
fn quiet_reads_after_noise(floor: u64) -> (u64, Vec<(String, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    support::write_events(dir.path(), "quiet", 20_000, 7);
    support::write_events(dir.path(), "noisy", 400_000, 7);
    // Pools of 2 MiB per core: the noisy table's three columns are several times that.
    let engine = support::engine_with(dir.path(), |c| {
        c.buffer_pool_bytes = 4 << 20;
        c.partial_cache_bytes = 0;
    });
    apply(
        &engine,
        "quiet",
        TenantQuota {
            pool_floor_bytes: floor,
            cpu_shares: 500,
            io_shares: 500,
            ..TenantQuota::default()
        },
    );
    let first = engine.sql("quiet", QUIET_SQL).unwrap();
    assert!(first.stats.scan.bytes_read > 0);
    for _ in 0..4 {
        engine.sql("noisy", NOISY_SQL).unwrap();
    }
    let again = engine.sql("quiet", QUIET_SQL).unwrap();
    assert_eq!(first.batches, again.batches);
    (again.stats.scan.bytes_read, engine.tenant_pool_bytes())
}

#[test]
fn another_tenants_scans_cannot_evict_a_tenant_below_its_floor() {
    let (read, held) = quiet_reads_after_noise(2 << 20);
    assert_eq!(
        read, 0,
        "the quiet tenant's pages were evicted despite its floor"
    );
    let quiet = held.iter().find(|(t, _)| t == "quiet").map(|(_, b)| *b);
    assert!(quiet.is_some_and(|b| b > 0), "{held:?}");
    let (read, held) = quiet_reads_after_noise(0);
    assert!(
        read > 0,
        "without a floor the scans should evict the quiet tenant's pages"
    );
    assert!(held.is_empty(), "{held:?}");
}
