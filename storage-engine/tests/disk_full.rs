//! Streaming ingestion on a full disk, on a real small file system the test makes (an ext4 image
//! on a loop device; needs root, as CI runs): batches fail with `io: disk full`, nothing
//! acknowledged is lost, a restart on the full disk works, and once space is freed ingestion
//! resumes without a restart.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

/// A mounted ext4 image, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(mib: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a loop device needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount)
            .output()
            .unwrap();
        if !mounted.status.success() {
            // A container without loop devices: nothing to test on.
            eprintln!(
                "skipped: cannot mount a loop device: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return None;
        }
        Some(SmallDisk { mount, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ipc(sequence: u64) -> Vec<u8> {
    let batch = events_chunk(sequence * 8000, 8000, 1_000_000, sequence);
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

fn count(engine: &Engine) -> i64 {
    let result = engine.sql("acme", "SELECT COUNT(*) FROM events").unwrap();
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn open(data: &Path) -> Engine {
    support::engine_with(data, |config| {
        // Rows stay in the log and buffers: the log alone fills the disk.
        config.ingest.flush_bytes = 4 << 30;
        config.ingest.memory_bytes = 4 << 30;
    })
}

#[test]
fn a_full_disk_fails_batches_as_disk_full_loses_nothing_and_recovers_without_restart() {
    let Some(disk) = SmallDisk::new(300) else {
        return;
    };
    let data = disk.mount.join("data");
    let first = events_chunk(0, 1000, 1000, 1);
    let mut writer = TableWriter::open(
        &data,
        "acme",
        "events",
        &first.schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    writer.write(&first).unwrap();
    writer.finish().unwrap();
    // Leave room for about one log segment.
    let filler = disk.mount.join("filler");
    std::fs::write(&filler, vec![1u8; 180 << 20]).unwrap();

    let engine = open(&data);
    let (mut acknowledged, mut sequence) = (1000i64, 0u64);
    let error = loop {
        assert!(sequence < 500, "the disk never filled");
        match engine.ingest("acme", "events", "p", sequence, ipc(sequence)) {
            Ok(ack) => acknowledged += ack.rows as i64,
            Err(error) => break error,
        }
        sequence += 1;
    };
    assert_eq!(error.code(), "io", "{error}");
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(
        sequence > 0,
        "nothing was acknowledged before the disk filled"
    );
    assert_eq!(count(&engine), acknowledged);
    // Still full: still refused, still nothing lost.
    assert_eq!(
        engine
            .ingest("acme", "events", "p", sequence, ipc(sequence))
            .unwrap_err()
            .code(),
        "io"
    );
    // A restart on the full disk writes nothing: the log's records are buffered again.
    drop(engine);
    let engine = open(&data);
    assert_eq!(count(&engine), acknowledged);
    // Space comes back: the same batch goes through, with no restart, and everything flushes.
    std::fs::remove_file(&filler).unwrap();
    let ack = engine
        .ingest("acme", "events", "p", sequence, ipc(sequence))
        .unwrap();
    assert!(!ack.duplicate);
    acknowledged += ack.rows as i64;
    assert_eq!(count(&engine), acknowledged);
    assert!(engine.flush_ingest("acme", "events").unwrap() >= 1);
    assert_eq!(count(&engine), acknowledged);
    drop(engine);
    let engine = open(&data);
    assert_eq!(count(&engine), acknowledged);
}
