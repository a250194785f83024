//! `kind=rawio`: reads one file through the engine's own read path — a pinned executor per
//! job (`numjobs`), `DirectFile` (O_DIRECT through io_uring), `iodepth` reads in flight — with
//! fio's meaning of `rw` (read = sequential, randread = random `bs`-aligned offsets), `bs`,
//! `size`, `runtime`/`time_based` and `loops`, so a fio job with the same values can run back to
//! back with it. Each job reads the whole file independently, as fio's jobs do.
//! The file is laid out (written and fsynced, random bytes) when missing or shorter than `size`.

use crate::hist::Latencies;
use crate::job::{Job, JobError, Stop};
use crate::report::JobReport;
use crate::run::{cpu_seconds, cpu_since, progress_line, Collected, Progress};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_storage_engine::io::host;
use tessera_storage_engine::io::runtime::{CoreOptions, CorePool, DirectFile};

struct Plan {
    path: PathBuf,
    random: bool,
    block: u64,
    depth: usize,
    size: u64,
    /// Stop after this long (runtime), if set.
    deadline_after: Option<Duration>,
    /// Stop after this many reads per executor (passes over the file), if set.
    limit: Option<u64>,
}

pub fn run(job: &Job, progress: bool) -> Result<JobReport, JobError> {
    let path = PathBuf::from(job.required("filename")?);
    let rw = job.choice("rw", &["read", "randread"], "read")?;
    let block = job.size_or("bs", 4096)?;
    if block == 0 || block % 512 != 0 || block > 64 << 20 {
        return Err(job.invalid("bs", format!("bs={block}: a multiple of 512 up to 64m")));
    }
    let depth = job.size_or("iodepth", 1)?;
    if !(1..=1024).contains(&depth) {
        return Err(job.invalid("iodepth", format!("iodepth={depth}: 1 to 1024")));
    }
    let numjobs = job.size_or("numjobs", 1)? as usize;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    if numjobs == 0 || numjobs > available {
        return Err(job.invalid(
            "numjobs",
            format!("numjobs={numjobs}: one executor per core, this machine has {available}"),
        ));
    }
    let size = match job.size("size")? {
        Some(size) => size,
        None => std::fs::metadata(&path).map(|m| m.len()).map_err(|e| {
            job.invalid(
                "size",
                format!("no size= and cannot stat {}: {e}", path.display()),
            )
        })?,
    };
    if size < block {
        return Err(job.invalid("size", format!("size={size} is smaller than bs={block}")));
    }
    let blocks = size / block;
    // As fio: runtime with time_based reads until the time is up; runtime alone stops at one
    // pass or the time, whichever comes first; loops makes that many passes; neither, one pass.
    let (deadline_after, limit) = match job.stop()? {
        Stop::Runtime(runtime) if job.has("runtime") => {
            (Some(runtime), (!job.bool("time_based")?).then_some(blocks))
        }
        Stop::Runtime(_) => (None, Some(blocks)),
        Stop::Loops(loops) => (None, Some(blocks.saturating_mul(loops))),
    };
    lay_out(&path, size).map_err(|e| {
        job.invalid(
            "filename",
            format!("cannot lay out {}: {e}", path.display()),
        )
    })?;
    let plan = Arc::new(Plan {
        path: path.clone(),
        random: rw == "randread",
        block,
        depth: depth as usize,
        size: blocks * block,
        deadline_after,
        limit,
    });
    let host_error = |e: tessera_storage_engine::Error| job.invalid("numjobs", e.to_string());
    let options = CoreOptions {
        cores: numjobs,
        cpus: host::choose_cpus(&host::allowed_cpus(), None, numjobs, true).map_err(host_error)?,
        io_memory_bytes: host::io_memory_per_core(numjobs).map_err(host_error)?,
        spin_before_park_us: 0,
        probe_file: Some(path.clone()),
        time_slice: tessera_storage_engine::io::runtime::DEFAULT_TIME_SLICE,
        throughput_shares: tessera_storage_engine::io::runtime::DEFAULT_THROUGHPUT_SHARES,
    };
    let pool = CorePool::start(&options, |_| ())
        .map_err(|e| job.invalid("numjobs", format!("cannot start executors: {e}")))?;
    let counters = Arc::new(Progress::default());
    let finished = AtomicBool::new(false);
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let seed = job.size_or("seed", 42)?;
    let receivers: Vec<_> = (0..numjobs)
        .map(|core| {
            let (plan, counters) = (plan.clone(), counters.clone());
            pool.run_on(core, move |_, _| {
                read_file(plan, counters, seed ^ (core as u64 + 1))
            })
        })
        .collect();
    let mut total = Collected::default();
    std::thread::scope(|scope| {
        if progress {
            let (finished, counters) = (&finished, &counters);
            scope.spawn(move || {
                progress_line(&job.name, started, deadline_after, counters, finished)
            });
        }
        for receiver in receivers {
            match futures::executor::block_on(receiver) {
                Ok(Ok((latencies, bytes))) => {
                    total.ops += latencies.count();
                    total.bytes += bytes;
                    total.all.merge(&latencies);
                }
                Ok(Err(error)) => {
                    total.errors += 1;
                    *total.error_codes.entry("io".into()).or_default() += 1;
                    total.error_samples.push(error);
                }
                Err(_) => {
                    total.errors += 1;
                    total
                        .error_samples
                        .push("an executor stopped before finishing".into());
                }
            }
        }
        finished.store(true, Ordering::Relaxed);
    });
    total.elapsed = started.elapsed();
    total.cpu = cpu_since(cpu_before, total.elapsed);
    let mut settings = BTreeMap::new();
    settings.insert("filename".into(), path.display().to_string());
    settings.insert("rw".into(), rw.to_owned());
    settings.insert("bs".into(), block.to_string());
    settings.insert("iodepth".into(), depth.to_string());
    settings.insert("numjobs".into(), numjobs.to_string());
    settings.insert("size".into(), size.to_string());
    Ok(total.into_report(&job.name, "rawio", settings))
}

/// Writes `size` bytes of pseudo-random data to `path` unless it already holds that many.
fn lay_out(path: &Path, size: u64) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= size) {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        written += n as u64;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// One executor's share: `depth` tasks reading blocks until the plan says stop.
async fn read_file(
    plan: Arc<Plan>,
    counters: Arc<Progress>,
    seed: u64,
) -> Result<(Latencies, u64), String> {
    let file = Rc::new(
        DirectFile::open(&plan.path)
            .await
            .map_err(|e| format!("{}: {e}", plan.path.display()))?,
    );
    let blocks = plan.size / plan.block;
    let started = Instant::now();
    // Sequential: the next block to issue, shared by the tasks of this executor.
    let next = Rc::new(Cell::new(0u64));
    let rng = Rc::new(Cell::new(seed | 1));
    let tasks = (0..plan.depth).map(|_| {
        let (file, plan, next, rng, counters) = (
            file.clone(),
            plan.clone(),
            next.clone(),
            rng.clone(),
            counters.clone(),
        );
        async move {
            let mut latencies = Latencies::new();
            let mut bytes = 0u64;
            loop {
                if plan.deadline_after.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let issued = next.get();
                if plan.limit.is_some_and(|limit| issued >= limit) {
                    break;
                }
                next.set(issued + 1);
                let block = if plan.random {
                    let mut x = rng.get();
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    rng.set(x);
                    x.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks
                } else {
                    issued % blocks
                };
                let begun = Instant::now();
                file.read_at(block * plan.block, plan.block as usize)
                    .await
                    .map_err(|e| {
                        format!(
                            "{}: read at {}: {e}",
                            plan.path.display(),
                            block * plan.block
                        )
                    })?;
                latencies.record(begun.elapsed());
                bytes += plan.block;
                counters.ops.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(plan.block, Ordering::Relaxed);
            }
            Ok::<_, String>((latencies, bytes))
        }
    });
    let results = futures::future::join_all(tasks).await;
    let mut all = Latencies::new();
    let mut total = 0;
    for result in results {
        let (latencies, bytes) = result?;
        all.merge(&latencies);
        total += bytes;
    }
    Ok((all, total))
}
