//! Tenants' quota objects on this node (`table::quota`), read once from disk and then kept here,
//! and their enforcement: concurrent queries through `Admission`, result bytes in the result
//! sink, storage bytes before imports and appends, the ingest rate as a token bucket that holds
//! appends back. Shared by every core (a lock held for a few instructions, never across an
//! await); per-tenant metrics follow every change.

use crate::admission::Admission;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tessera_storage_engine::io::runtime;
use tessera_storage_engine::table::quota::{self, TenantQuota};
use tessera_storage_engine::{Error, Result};

/// How old a tenant's measured storage may be before a check measures it again.
const STORAGE_REFRESH: Duration = Duration::from_secs(1);

pub struct Quotas {
    data_dir: PathBuf,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    tenants: Mutex<HashMap<String, Tenant>>,
}

#[derive(Default)]
struct Tenant {
    quota: TenantQuota,
    /// File bytes when last measured, plus bytes ingested since.
    storage: Option<(u64, Instant)>,
    /// Ingest tokens (bytes) and when they were last topped up.
    bucket: Option<(f64, Instant)>,
}

impl Quotas {
    pub fn new(data_dir: PathBuf, admission: Arc<Admission>, metrics: Arc<Metrics>) -> Quotas {
        Quotas {
            data_dir,
            admission,
            metrics,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tenant>> {
        // Every update is a plain assignment: a poisoned map is still consistent.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's quota, read from its object the first time it is asked for.
    pub async fn get(&self, tenant: &str) -> Result<TenantQuota> {
        if let Some(entry) = self.lock().get(tenant) {
            return Ok(entry.quota);
        }
        let (data_dir, name) = (self.data_dir.clone(), tenant.to_owned());
        let loaded = runtime::spawn_blocking(move || quota::load(&data_dir, &name)).await?;
        let mut tenants = self.lock();
        // Another call may have loaded (or an operator set) it meanwhile: that one stands.
        if let Some(entry) = tenants.get(tenant) {
            return Ok(entry.quota);
        }
        tenants.insert(
            tenant.to_owned(),
            Tenant {
                quota: loaded,
                ..Tenant::default()
            },
        );
        self.apply(tenant, &loaded);
        Ok(loaded)
    }

    /// Stores the tenant's new quota object, then enforces it.
    pub async fn set(&self, tenant: &str, new: TenantQuota) -> Result<()> {
        let (data_dir, name) = (self.data_dir.clone(), tenant.to_owned());
        runtime::spawn_blocking(move || quota::store(&data_dir, &name, &new)).await?;
        let mut tenants = self.lock();
        let entry = tenants.entry(tenant.to_owned()).or_default();
        entry.quota = new;
        entry.bucket = None;
        self.apply(tenant, &new);
        Ok(())
    }

    /// Forgets a dropped tenant (its object went with its directory).
    pub fn forget(&self, tenant: &str) {
        self.lock().remove(tenant);
        self.apply(tenant, &TenantQuota::default());
    }

    fn apply(&self, tenant: &str, quota: &TenantQuota) {
        let limit = (quota.concurrent_queries > 0).then_some(quota.concurrent_queries as usize);
        self.admission.set_tenant_limit(tenant, limit);
        for (name, value) in [
            ("concurrent_queries", quota.concurrent_queries as i64),
            ("result_bytes", quota.result_bytes as i64),
            ("storage_bytes", quota.storage_bytes as i64),
            (
                "ingest_bytes_per_second",
                quota.ingest_bytes_per_second as i64,
            ),
            ("cpu_shares", quota.cpu_shares as i64),
            ("io_shares", quota.io_shares as i64),
            ("pool_floor_bytes", quota.pool_floor_bytes as i64),
        ] {
            self.metrics
                .tenant_quota
                .get_or_create(&vec![
                    ("tenant".to_owned(), tenant.to_owned()),
                    ("limit".to_owned(), name.to_owned()),
                ])
                .set(value);
        }
    }

    /// Counts a refusal (or a hold-back) by `limit` of the tenant's quota.
    pub fn refused(&self, tenant: &str, limit: &str) {
        self.metrics
            .tenant_quota_refusals
            .get_or_create(&vec![
                ("tenant".to_owned(), tenant.to_owned()),
                ("limit".to_owned(), limit.to_owned()),
            ])
            .inc();
    }

    /// The bytes the tenant's table files hold now (measured, not cached).
    pub async fn storage_used(&self, tenant: &str) -> Result<u64> {
        let (data_dir, name) = (self.data_dir.clone(), tenant.to_owned());
        let used = runtime::spawn_blocking(move || quota::storage_bytes(&data_dir, &name)).await?;
        if let Some(entry) = self.lock().get_mut(tenant) {
            entry.storage = Some((used, Instant::now()));
        }
        self.metrics
            .tenant_storage_bytes
            .get_or_create(&vec![("tenant".to_owned(), tenant.to_owned())])
            .set(used as i64);
        Ok(used)
    }

    /// Fails with `limit` when the tenant holds its quota of storage bytes (measured at most
    /// `STORAGE_REFRESH` ago, plus what it ingested since); else returns its quota.
    pub async fn check_storage(&self, tenant: &str) -> Result<TenantQuota> {
        let quota = self.get(tenant).await?;
        if quota.storage_bytes == 0 {
            return Ok(quota);
        }
        let known = self
            .lock()
            .get(tenant)
            .and_then(|t| t.storage)
            .filter(|(_, at)| at.elapsed() < STORAGE_REFRESH)
            .map(|(used, _)| used);
        let used = match known {
            Some(used) => used,
            None => self.storage_used(tenant).await?,
        };
        if used >= quota.storage_bytes {
            self.refused(tenant, "storage_bytes");
            return Err(Error::LimitExceeded {
                what: "tenant storage",
                limit: quota.storage_bytes,
                detail: format!(
                    "tenant {tenant} holds {used} bytes of table files, its quota is {} bytes; drop data or ask an operator to raise it",
                    quota.storage_bytes
                ),
            });
        }
        Ok(quota)
    }

    /// Counts `bytes` ingested toward the tenant's storage until the next measurement.
    pub fn ingested(&self, tenant: &str, bytes: u64) {
        if let Some((used, _)) = self.lock().get_mut(tenant).and_then(|t| t.storage.as_mut()) {
            *used += bytes;
        }
    }

    /// Takes `bytes` from the tenant's ingest bucket and returns how long the append must wait
    /// first (zero within the rate; the bucket holds one second of it, and goes into debt so
    /// appends that wait are served in turn).
    pub fn ingest_wait(&self, tenant: &str, quota: &TenantQuota, bytes: u64) -> Duration {
        let rate = quota.ingest_bytes_per_second;
        if rate == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut tenants = self.lock();
        let entry = tenants.entry(tenant.to_owned()).or_default();
        let (tokens, at) = entry.bucket.unwrap_or((rate as f64, now));
        let topped = (tokens + now.duration_since(at).as_secs_f64() * rate as f64).min(rate as f64);
        let left = topped - bytes as f64;
        entry.bucket = Some((left, now));
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / rate as f64)
        }
    }
}

/// A tenant's quota object as the catalog keeps it (`Coordinator.setQuota`): `json` checked
/// (the tenant's name, every field known and of its type) and written back in one form.
pub fn catalog_quota(tenant: &str, json: &str) -> std::result::Result<String, String> {
    tessera_storage_engine::table::manifest::validate_name("tenant", tenant)
        .map_err(|e| e.to_string())?;
    let quota: TenantQuota =
        serde_json::from_str(json).map_err(|e| format!("the quota object: {e}"))?;
    serde_json::to_string(&quota).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_bucket_allows_one_second_of_burst_then_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let quotas = Quotas::new(
            dir.path().to_owned(),
            Admission::new(1, 1, 1, Duration::from_secs(1)),
            Arc::new(Metrics::new()),
        );
        let quota = TenantQuota {
            ingest_bytes_per_second: 1_000,
            ..TenantQuota::default()
        };
        assert_eq!(quotas.ingest_wait("t", &quota, 600), Duration::ZERO);
        assert_eq!(quotas.ingest_wait("t", &quota, 400), Duration::ZERO);
        // The burst is spent: the next 500 bytes wait about half a second, the next 500 a
        // second (appends queue behind each other's debt).
        let first = quotas.ingest_wait("t", &quota, 500);
        assert!(first > Duration::from_millis(450) && first <= Duration::from_millis(500));
        let second = quotas.ingest_wait("t", &quota, 500);
        assert!(second > Duration::from_millis(950) && second <= Duration::from_millis(1_000));
        // Another tenant, or no quota, is not held back.
        assert_eq!(quotas.ingest_wait("u", &quota, 1_000), Duration::ZERO);
        let none = TenantQuota::default();
        assert_eq!(quotas.ingest_wait("t", &none, 1 << 30), Duration::ZERO);
    }

    #[test]
    fn the_catalog_keeps_a_checked_quota_in_one_form() {
        let kept = catalog_quota("acme", r#"{ "storage_bytes": 5 }"#).unwrap();
        let quota: TenantQuota = serde_json::from_str(&kept).unwrap();
        assert_eq!(quota.storage_bytes, 5);
        assert_eq!(kept, catalog_quota("acme", &kept).unwrap());
        assert!(catalog_quota("acme", r#"{"storage": 5}"#).is_err());
        assert!(catalog_quota("acme", r#"{"storage_bytes": -1}"#).is_err());
        assert!(catalog_quota("../acme", "{}").is_err());
    }
}
