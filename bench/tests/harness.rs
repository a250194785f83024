//! The harness end to end, in seconds: every job kind on tiny inputs (a rawio file of a few MiB,
//! a 20 000-row events table, embedded and over a loopback server), the JSON report, the
//! command's exit codes, and the shipped job files (they parse, and each rawio job has the same
//! parameters as its fio twin).

use std::path::Path;
use std::process::Command;
use tessera_bench::job;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_kind_runs_on_tiny_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let jobfile = write(
        dir.path(),
        "tiny.fio",
        &format!(
            "[membw]\nkind=membw\nsize=1m\nloops=3\n\
             [global]\nfilename={d}/raw.dat\nsize=2m\ndata={d}/data\ntenant=t\ntable=events\ngenerate=20000\npool=64m\n\
             [seq]\nkind=rawio\nrw=read\nbs=64k\niodepth=4\nloops=2\n\
             [rand]\nkind=rawio\nrw=randread\nbs=4k\niodepth=8\nnumjobs=1\nruntime=200ms\ntime_based\n\
             [scan-cold]\nkind=scan\nloops=2\nrow_bytes=8\n\
             [scan-warm]\nkind=scan\ncache=warm\nloops=3\n\
             [mix-embedded]\nkind=query\nusers=2\nloops=8\n\
             [mix-server]\nkind=query\ntarget=server\nusers=3\nloops=5\nseed=9\n\
             [fixed]\nkind=query\nsql=SELECT COUNT(*) FROM events WHERE status = 'ok'\nloops=2\n\
             [ingest]\nkind=ingest\ntarget=server\ndata={d}/ingest\nnumjobs=2\nbs=1m\nsize=4m\n"
        ),
    );
    let report = tessera_bench::run_files(&[jobfile], &[], false).unwrap();
    let by_name = |name: &str| report.jobs.iter().find(|j| j.jobname == name).unwrap();
    assert_eq!(report.jobs.len(), 9);
    for job in &report.jobs {
        assert_eq!(job.errors, 0, "{}: {:?}", job.jobname, job.error_samples);
        assert!(job.ops > 0, "{}", job.jobname);
        assert!(
            job.lat_us.max >= job.lat_us.min && job.lat_us.percentiles.len() == 5,
            "{}",
            job.jobname
        );
    }
    assert_eq!(by_name("membw").ops, 3);
    assert_eq!(by_name("membw").bytes, 3 << 20);
    // loops=2 over a 2 MiB file in 64 KiB blocks: exactly 64 reads of 64 KiB.
    assert_eq!(by_name("seq").ops, 64);
    assert_eq!(by_name("seq").bytes, 4 << 20);
    assert!(
        by_name("scan-cold").bytes > 0,
        "a cold scan reads from disk"
    );
    assert_eq!(
        by_name("scan-warm").bytes,
        0,
        "a warm scan is served by the pool"
    );
    assert!(by_name("scan-cold").extra["per_core_scanned_bytes_per_s"] > 0.0);
    let mix = by_name("mix-embedded");
    assert_eq!(mix.ops, 16);
    assert_eq!(mix.classes.values().map(|c| c.ops).sum::<u64>(), 16);
    assert!(mix
        .classes
        .keys()
        .all(|c| tessera_bench::workload::CLASSES.contains(&c.as_str())));
    assert_eq!(by_name("mix-server").ops, 15);
    assert_eq!(by_name("fixed").classes["query"].ops, 2);
    // 4 MiB in ~1 MiB batches over 2 streams: 2 batches each.
    assert_eq!(by_name("ingest").ops, 4);
    assert!(by_name("ingest").bytes >= 4 << 20);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["jobs"][0]["lat_us"]["percentiles"]["99.9"].is_number());
}

#[test]
fn the_command_prints_json_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let bench = env!("CARGO_BIN_EXE_tessera-bench");
    let good = write(
        dir.path(),
        "good.fio",
        "[m]\nkind=membw\nsize=1m\nloops=2\n",
    );
    let output = Command::new(bench)
        .args(["--output-format=json"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["jobs"][0]["jobname"], "m");
    assert_eq!(json["jobs"][0]["ops"], 2);
    let text = Command::new(bench).arg(&good).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("lat percentiles: p50="));

    let bad = write(
        dir.path(),
        "bad.fio",
        "[m]\nkind=membw\nsize=1m\niodepth=3\n",
    );
    let output = Command::new(bench).arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.fio:4") && stderr.contains("unknown key 'iodepth'"),
        "{stderr}"
    );

    // A query that fails every time: the run finishes, reports the errors and exits 1.
    let failing = write(
        dir.path(),
        "failing.fio",
        &format!(
            "[q]\nkind=query\ndata={}/data\ngenerate=1000\nsql=SELECT nope FROM events\nloops=3\ncache=cold\n",
            dir.path().display()
        ),
    );
    let output = Command::new(bench).arg(&failing).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("errors=3") && stdout.contains("sql: 3"),
        "{stdout}"
    );
}

fn shipped_jobs() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fio"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn env(name: &str) -> Option<String> {
    (name == "TESSERA_BENCH_FILE").then(|| "/tmp/raw.dat".to_owned())
}

#[test]
fn shipped_job_files_parse_and_match_their_fio_twins() {
    let files = shipped_jobs();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "rawio-seq.fio",
        "rawio-rand4k.fio",
        "query-mix.fio",
        "ingest.fio",
        "scan.fio",
    ] {
        assert!(
            names.contains(&expected),
            "bench/jobs/{expected} is missing"
        );
    }
    let mut twins = 0;
    for (name, text) in &files {
        if let Some(ours) = name.strip_prefix("fio-") {
            // fio's own keys are not ours: compare the shared parameters key by key.
            let fio = fio_values(text);
            let (_, our_text) = files
                .iter()
                .find(|(n, _)| n == ours)
                .unwrap_or_else(|| panic!("{name} has no twin {ours}"));
            let jobs = job::parse_with_env(our_text, ours, &env).unwrap();
            assert_eq!(jobs.len(), 1, "{ours}");
            for key in [
                "filename",
                "rw",
                "bs",
                "iodepth",
                "size",
                "runtime",
                "numjobs",
                "time_based",
            ] {
                assert_eq!(
                    jobs[0].str(key),
                    fio.get(key).map(String::as_str),
                    "{ours} vs {name}: {key}"
                );
            }
            assert_eq!(
                fio.get("direct").map(String::as_str),
                Some("1"),
                "{name} must read with O_DIRECT"
            );
            twins += 1;
        } else {
            job::parse_with_env(text, name, &env).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert_eq!(twins, 2);
}

/// fio's file as key → value with globals applied (sections are merged: the twins hold one job).
fn fio_values(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with(';') && !l.starts_with('#') && !l.starts_with('[')
        })
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (
                k.trim().to_owned(),
                v.trim().replace("${TESSERA_BENCH_FILE}", "/tmp/raw.dat"),
            ),
            None => (l.to_owned(), "1".to_owned()),
        })
        .collect()
}
