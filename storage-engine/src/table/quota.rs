//! A tenant's quota object: the limits an operator sets for one tenant on a node, stored with
//! the tenant's tables (`<data>/<tenant>/_quota.json`, published atomically like a manifest) so
//! it survives restarts and goes with the tenant when it is dropped. Zero in a field means no
//! limit of that kind (the node's own limits still apply). The RPC layer enforces it.

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::table::manifest;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Queries of the tenant running at once on the node, short and long together; more wait
    /// in the admission queue (then `overloaded`).
    #[serde(default)]
    pub concurrent_queries: u32,
    /// Arrow IPC bytes one query may return; a larger result fails with `limit`.
    #[serde(default)]
    pub result_bytes: u64,
    /// Bytes of the tenant's table files; imports and ingestion are refused with `limit` once
    /// the tenant holds this much.
    #[serde(default)]
    pub storage_bytes: u64,
    /// Arrow IPC bytes per second the tenant may ingest (one second of burst); faster appends
    /// are held back, not refused.
    #[serde(default)]
    pub ingest_bytes_per_second: u64,
    /// CPU shares of the tenant's scans on every core against other tenants' (1..=1000; the
    /// default is the node's `throughput_shares`). Short queries run in a latency queue first.
    #[serde(default)]
    pub cpu_shares: u32,
    /// Shares of every core's direct reads while reads queue (1..=1000; default 250).
    #[serde(default)]
    pub io_shares: u32,
    /// Bytes of decoded pages (over all cores) other tenants' scans cannot evict.
    #[serde(default)]
    pub pool_floor_bytes: u64,
}

impl TenantQuota {
    /// The part of the quota every core enforces itself (CPU and IO shares, pool floor).
    pub fn resources(&self) -> (u32, u32, u64) {
        (self.cpu_shares, self.io_shares, self.pool_floor_bytes)
    }
}

const QUOTA_FILE: &str = "_quota.json";

fn path(data_dir: &Path, tenant: &str) -> PathBuf {
    data_dir.join(tenant).join(QUOTA_FILE)
}

/// The tenant's quota (no limits when none was set).
pub fn load(data_dir: &Path, tenant: &str) -> Result<TenantQuota> {
    manifest::validate_name("tenant", tenant)?;
    let path = path(data_dir, tenant);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptManifest {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TenantQuota::default()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Stores the tenant's quota (creating the tenant's directory), durably and atomically: a
/// reader sees the old object or the new one.
pub fn store(data_dir: &Path, tenant: &str, quota: &TenantQuota) -> Result<()> {
    // Shared: tables may change meanwhile, a tenant drop may not.
    let _lock = manifest::TenantLock::acquire(data_dir, tenant, false)?;
    let dir = data_dir.join(tenant);
    let created = !dir.is_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    if created {
        manifest::sync_dir(data_dir)?;
    }
    let target = path(data_dir, tenant);
    // One temporary name per store: concurrent stores of one tenant do not share a file.
    let temp = dir.join(format!("{QUOTA_FILE}.{}.tmp", manifest::new_incarnation()));
    let bytes = serde_json::to_vec_pretty(quota).map_err(|e| Error::Internal(e.to_string()))?;
    let mut file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    let written = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&temp, e));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    crash::after(Event::SyncFile(&temp));
    drop(file);
    std::fs::rename(&temp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io(&target, e)
    })?;
    crash::after(Event::Rename(&target));
    manifest::sync_dir(&dir)
}

/// Bytes of the files every table of the tenant lists.
pub fn storage_bytes(data_dir: &Path, tenant: &str) -> Result<u64> {
    let mut total = 0;
    for table in manifest::list_tables(data_dir, tenant)? {
        if let Some(manifest) = manifest::load_cached(data_dir, tenant, &table)? {
            total += manifest.files.iter().map(|f| f.bytes).sum::<u64>();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_quota_loads_back_and_a_missing_one_is_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "acme").unwrap(), TenantQuota::default());
        let quota = TenantQuota {
            concurrent_queries: 2,
            result_bytes: 1 << 20,
            storage_bytes: 1 << 30,
            ingest_bytes_per_second: 4 << 20,
            cpu_shares: 600,
            io_shares: 50,
            pool_floor_bytes: 64 << 20,
        };
        store(dir.path(), "acme", &quota).unwrap();
        assert_eq!(load(dir.path(), "acme").unwrap(), quota);
        // The tenant's tables are unaffected: the object is not a table.
        assert!(manifest::list_tables(dir.path(), "acme")
            .unwrap()
            .is_empty());
        // Damage is named, not read as "no limits".
        std::fs::write(
            dir.path().join("acme").join(QUOTA_FILE),
            b"{\"result_bytes\": -1}",
        )
        .unwrap();
        let error = load(dir.path(), "acme").unwrap_err().to_string();
        assert!(error.contains(QUOTA_FILE), "{error}");
        assert!(store(dir.path(), "../x", &quota).is_err());
    }
}
