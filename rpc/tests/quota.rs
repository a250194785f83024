//! Tenant quota objects over RPC: set and read by an operator only, stored with the tenant (a
//! restarted node keeps them), enforced on that tenant alone (result bytes, concurrent queries,
//! storage bytes, ingest rate; CPU and IO shares and the buffer-pool floor reach every core) and
//! visible per tenant in `/metrics`.

mod common;

use common::{block_on, start, token};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tessera_rpc::auth::Role;
use tessera_rpc::client::TenantQuota;
use tessera_rpc::{Client, Limits};

fn metrics(server: &common::TestServer) -> String {
    common::get(server.server.http_address().unwrap(), "/metrics").1
}

#[test]
fn quotas_are_set_by_operators_kept_across_restarts_and_bound_one_tenant() {
    let limits = Limits {
        admission_wait: Duration::from_millis(300),
        ..common::default_limits()
    };
    let server = start(200_000, limits.clone());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        let (none, used) = operator.quota("acme").await.unwrap();
        assert_eq!(none, TenantQuota::default());
        assert!(used > 0, "acme holds its events table");
        // A tenant's own admin cannot set its quota.
        let admin = client
            .login(&token(Some("acme"), Role::Admin))
            .await
            .unwrap();
        assert!(client
            .operator_login(&token(Some("acme"), Role::Admin))
            .await
            .is_err());
        operator
            .set_quota(
                "acme",
                TenantQuota {
                    concurrent_queries: 1,
                    ..TenantQuota::default()
                },
            )
            .await
            .unwrap();
        // Concurrent queries: while acme's one query holds its slot, its next waits and is
        // refused after the admission wait; another tenant is served meanwhile.
        // (A result larger than the flow-control window: the server waits on the client.)
        let mut holder = admin.query("SELECT * FROM events").await.unwrap();
        holder.next().await.unwrap().unwrap();
        let waited = admin
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            waited.contains("overloaded") && waited.contains("quota of 1 concurrent queries"),
            "{waited}"
        );
        let globex = client
            .login(&token(Some("globex"), Role::Reader))
            .await
            .unwrap();
        globex
            .query_collect("SELECT COUNT(*) FROM secrets")
            .await
            .unwrap();
        while let Some(batch) = holder.next().await {
            batch.unwrap();
        }
        drop(holder);

        operator
            .set_quota(
                "acme",
                TenantQuota {
                    concurrent_queries: 1,
                    result_bytes: 64 << 10,
                    storage_bytes: used,
                    ..TenantQuota::default()
                },
            )
            .await
            .unwrap();

        // Result bytes: a small answer passes, a large one fails naming the quota.
        admin
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        let large = admin
            .query_collect("SELECT * FROM events")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            large.contains("limit") && large.contains("quota of 65536 result bytes"),
            "{large}"
        );

        // Storage bytes: acme holds its quota, so imports and ingestion are refused.
        let rows = common::events(1_000);
        let refused = admin
            .import("events", rows.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("limit") && refused.contains("tenant storage"),
            "{refused}"
        );
        let mut stream = admin.ingest_stream("events", "p1").await.unwrap();
        let refused = stream.append(1, &rows[0]).await.unwrap_err().to_string();
        assert!(refused.contains("tenant storage"), "{refused}");
        // globex has no quota: its writes pass.
        let globex_writer = client
            .login(&token(Some("globex"), Role::Writer))
            .await
            .unwrap();
        globex_writer.import("secrets", rows.clone()).await.unwrap();
    });
    let text = metrics(&server);
    for line in [
        "tessera_tenant_quota{tenant=\"acme\",limit=\"concurrent_queries\"} 1",
        "tessera_tenant_quota{tenant=\"acme\",limit=\"result_bytes\"} 65536",
        "tessera_tenant_quota_refusals_total{tenant=\"acme\",limit=\"result_bytes\"} 1",
        "tessera_tenant_quota_refusals_total{tenant=\"acme\",limit=\"concurrent_queries\"} 1",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    assert!(
        text.contains(
            "tessera_tenant_quota_refusals_total{tenant=\"acme\",limit=\"storage_bytes\"} 2"
        ),
        "{text}"
    );

    // A new node on the same data directory enforces the stored object.
    let common::TestServer { server, dir } = server;
    drop(server);
    let restarted = common::restart(dir, limits);
    block_on(async {
        let client = Client::connect(&restarted.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        let (kept, _) = operator.quota("acme").await.unwrap();
        assert_eq!(kept.concurrent_queries, 1);
        assert_eq!(kept.result_bytes, 64 << 10);
        let reader = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let large = reader
            .query_collect("SELECT * FROM events")
            .await
            .unwrap_err()
            .to_string();
        assert!(large.contains("result bytes"), "{large}");
    });
}

#[test]
fn ingestion_is_held_to_the_tenants_rate() {
    let server = start(1_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        let writer = client
            .login(&token(Some("acme"), Role::Writer))
            .await
            .unwrap();
        let batches = common::events(20_000);
        // The rate counts Arrow IPC bytes as sent.
        let bytes: u64 = batches
            .iter()
            .map(|batch| {
                let mut writer =
                    arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
                writer.write(batch).unwrap();
                writer.finish().unwrap();
                writer.get_ref().len() as u64
            })
            .sum();
        let mut stream = writer.ingest_stream("events", "fast").await.unwrap();
        // Unlimited first: the whole set goes at the node's speed.
        let started = Instant::now();
        for (sequence, batch) in batches.iter().enumerate() {
            stream.append(sequence as u64, batch).await.unwrap();
        }
        let unlimited = started.elapsed();
        // Then at a rate that makes three sets take two seconds past the one-second burst.
        let rate = bytes.max(1);
        operator
            .set_quota(
                "acme",
                TenantQuota {
                    ingest_bytes_per_second: rate,
                    ..TenantQuota::default()
                },
            )
            .await
            .unwrap();
        let mut stream = writer.ingest_stream("events", "held").await.unwrap();
        let started = Instant::now();
        for round in 0..3u64 {
            for (sequence, batch) in batches.iter().enumerate() {
                let ack = stream
                    .append(round * 1_000 + sequence as u64, batch)
                    .await
                    .unwrap();
                assert!(!ack.duplicate);
            }
        }
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(1_800) && held > unlimited * 2,
            "{held:?} at {rate} bytes/s (unlimited: {unlimited:?})"
        );
    });
}

#[test]
fn shares_and_the_pool_floor_reach_the_cores_and_metrics() {
    let server = start(20_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        let quota = TenantQuota {
            cpu_shares: 600,
            io_shares: 50,
            pool_floor_bytes: 8 << 20,
            ..TenantQuota::default()
        };
        operator.set_quota("acme", quota).await.unwrap();
        assert_eq!(operator.quota("acme").await.unwrap().0, quota);
        let invalid = operator
            .set_quota(
                "acme",
                TenantQuota {
                    cpu_shares: 5_000,
                    ..quota
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            invalid.contains("invalid") && invalid.contains("1..1000"),
            "{invalid}"
        );
        let reader = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        reader
            .query_collect("SELECT category, SUM(amount) FROM events GROUP BY category")
            .await
            .unwrap();
    });
    let text = metrics(&server);
    for line in [
        "tessera_tenant_quota{tenant=\"acme\",limit=\"cpu_shares\"} 600",
        "tessera_tenant_quota{tenant=\"acme\",limit=\"io_shares\"} 50",
        "tessera_tenant_quota{tenant=\"acme\",limit=\"pool_floor_bytes\"} 8388608",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    // The tenant's pages in the pools count toward its floor.
    let pooled: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tessera_tenant_pool_bytes{tenant=\"acme\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tessera_tenant_pool_bytes for acme in:\n{text}"));
    assert!(pooled > 0, "{text}");
}
