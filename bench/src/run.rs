//! The shared measuring loop: worker threads run operations until the job's stop condition,
//! optionally paced to a rate, each recording latency per operation class into its own HDR
//! histogram; a progress line on a terminal; process CPU from getrusage.

use crate::hist::Latencies;
use crate::job::Stop;
use crate::report::{ClassReport, Cpu, JobReport};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one operation did.
pub struct Outcome {
    pub class: &'static str,
    pub bytes: u64,
    /// The operation's own measure of its latency (e.g. excluding untimed set-up); None: the
    /// loop's wall-clock time around it.
    pub latency: Option<Duration>,
    /// An error code (e.g. `overloaded`) and message when the operation failed.
    pub error: Option<(String, String)>,
}

/// Counters shared with the progress line.
#[derive(Default)]
pub struct Progress {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
}

/// What the workers measured, merged.
#[derive(Default)]
pub struct Collected {
    pub all: Latencies,
    pub classes: BTreeMap<&'static str, (Latencies, u64)>,
    pub ops: u64,
    pub errors: u64,
    pub bytes: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub elapsed: Duration,
    pub cpu: Cpu,
}

impl Collected {
    fn absorb(&mut self, other: Collected) {
        self.all.merge(&other.all);
        for (class, (latencies, errors)) in other.classes {
            let entry = self.classes.entry(class).or_default();
            entry.0.merge(&latencies);
            entry.1 += errors;
        }
        self.ops += other.ops;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for (code, count) in other.error_codes {
            *self.error_codes.entry(code).or_default() += count;
        }
        for sample in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(sample);
            }
        }
    }

    /// Records one operation that took `latency`.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, progress: &Progress) {
        let entry = self.classes.entry(outcome.class).or_default();
        match outcome.error {
            None => {
                self.all.record(latency);
                entry.0.record(latency);
                self.ops += 1;
                self.bytes += outcome.bytes;
                progress.ops.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(outcome.bytes, Ordering::Relaxed);
            }
            Some((code, message)) => {
                entry.1 += 1;
                self.errors += 1;
                *self.error_codes.entry(code).or_default() += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(message);
                }
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn into_report(
        self,
        jobname: &str,
        kind: &str,
        settings: BTreeMap<String, String>,
    ) -> JobReport {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        JobReport {
            jobname: jobname.to_owned(),
            kind: kind.to_owned(),
            settings,
            ops: self.ops,
            errors: self.errors,
            runtime_s: seconds,
            ops_per_s: self.ops as f64 / seconds,
            bytes: self.bytes,
            bw_bytes_per_s: self.bytes as f64 / seconds,
            lat_us: self.all.summary(),
            cpu: self.cpu,
            classes: self
                .classes
                .into_iter()
                .map(|(class, (latencies, errors))| {
                    (
                        class.to_owned(),
                        ClassReport {
                            ops: latencies.count(),
                            errors,
                            lat_us: latencies.summary(),
                        },
                    )
                })
                .collect(),
            error_codes: self.error_codes,
            error_samples: self.error_samples,
            extra: BTreeMap::new(),
        }
    }
}

/// Decides when each worker stops, and paces it when a rate is set.
#[derive(Clone)]
pub struct Pacer<'a> {
    stop: Stop,
    deadline: Option<Instant>,
    /// Interval between one worker's operations at the requested rate.
    interval: Option<Duration>,
    waves: Option<std::sync::Arc<Waves<'a>>>,
}

/// Operations in waves: every worker runs one operation per wave, a wave ends when every
/// worker's operation has, then `between` runs once and the workers pause until `pause` has
/// passed since the wave ended (the spec's load test: each user sends one query, the queries are
/// awaited together, then a pause).
pub struct Waves<'a> {
    barrier: std::sync::Barrier,
    pause: Duration,
    go_on: AtomicBool,
    /// What is left of the pause after `between` ran, in µs.
    pause_left_us: AtomicU64,
    between: Box<dyn Fn(u64) + Send + Sync + 'a>,
}

impl<'a> Waves<'a> {
    /// `between(wave)` runs after wave `wave` (0-based) when another follows.
    pub fn new(
        workers: usize,
        pause: Duration,
        between: Box<dyn Fn(u64) + Send + Sync + 'a>,
    ) -> Waves<'a> {
        Waves {
            barrier: std::sync::Barrier::new(workers.max(1)),
            pause,
            go_on: AtomicBool::new(true),
            pause_left_us: AtomicU64::new(0),
            between,
        }
    }
}

impl<'a> Pacer<'a> {
    /// `rate_iops` is the whole job's rate, shared evenly by `workers`.
    pub fn new(stop: Stop, rate_iops: Option<u64>, workers: usize) -> Pacer<'a> {
        Pacer {
            stop,
            deadline: match stop {
                Stop::Runtime(runtime) => Some(Instant::now() + runtime),
                Stop::Loops(_) => None,
            },
            interval: rate_iops
                .filter(|&rate| rate > 0)
                .map(|rate| Duration::from_secs_f64(workers.max(1) as f64 / rate as f64)),
            waves: None,
        }
    }

    /// Runs the workers in waves (every worker must use this pacer).
    pub fn with_waves(mut self, waves: Waves<'a>) -> Pacer<'a> {
        self.waves = Some(std::sync::Arc::new(waves));
        self
    }

    /// Waits for the next operation's turn; false when the worker should stop after `done` ops.
    pub fn next(&self, done: u64, next_at: &mut Instant) -> bool {
        let more = |done: u64| match self.stop {
            Stop::Loops(loops) => done < loops,
            Stop::Runtime(_) => self.deadline.is_none_or(|d| Instant::now() < d),
        };
        if let (Some(waves), true) = (&self.waves, done > 0) {
            // One worker decides for all whether another wave runs, so all stop together.
            if waves.barrier.wait().is_leader() {
                let go_on = more(done);
                waves.go_on.store(go_on, Ordering::SeqCst);
                let ended = Instant::now();
                if go_on {
                    (waves.between)(done - 1);
                }
                let left = waves.pause.saturating_sub(ended.elapsed());
                waves
                    .pause_left_us
                    .store(left.as_micros() as u64, Ordering::SeqCst);
            }
            waves.barrier.wait();
            if !waves.go_on.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(
                waves.pause_left_us.load(Ordering::SeqCst),
            ));
            return true;
        }
        if !more(done) {
            return false;
        }
        if let Some(interval) = self.interval {
            let now = Instant::now();
            if *next_at > now {
                std::thread::sleep(*next_at - now);
            }
            *next_at = (*next_at).max(now - interval) + interval;
        }
        true
    }

    pub fn total(&self) -> Option<Duration> {
        match self.stop {
            Stop::Runtime(runtime) => Some(runtime),
            Stop::Loops(_) => None,
        }
    }
}

/// Runs `workers` closures on their own threads until the pacer stops them.
pub fn closed_loop<W>(
    name: &str,
    workers: Vec<W>,
    pacer: Pacer<'_>,
    show_progress: bool,
) -> Collected
where
    W: FnMut(u64) -> Outcome + Send,
{
    let progress = Progress::default();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut total = Collected::default();
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut work| {
                let (pacer, progress) = (pacer.clone(), &progress);
                scope.spawn(move || {
                    let mut collected = Collected::default();
                    let mut next_at = Instant::now();
                    let mut done = 0;
                    while pacer.next(done, &mut next_at) {
                        let begun = Instant::now();
                        let outcome = work(done);
                        let latency = outcome.latency.unwrap_or_else(|| begun.elapsed());
                        collected.record(outcome, latency, progress);
                        done += 1;
                    }
                    collected
                })
            })
            .collect();
        if show_progress {
            let (finished, progress) = (&finished, &progress);
            scope.spawn(move || progress_line(name, started, pacer.total(), progress, finished));
        }
        for handle in handles {
            match handle.join() {
                Ok(collected) => total.absorb(collected),
                Err(_) => {
                    total.errors += 1;
                    *total.error_codes.entry("panic".into()).or_default() += 1;
                }
            }
        }
        finished.store(true, Ordering::Relaxed);
    });
    total.elapsed = started.elapsed();
    total.cpu = cpu_since(cpu_before, total.elapsed);
    total
}

/// Whether to draw a progress line (stderr is a terminal).
pub fn progress_wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// `\r`-rewritten status every half second until `finished`.
pub fn progress_line(
    name: &str,
    started: Instant,
    total: Option<Duration>,
    progress: &Progress,
    finished: &AtomicBool,
) {
    let mut stderr = std::io::stderr();
    let mut ticks = 0u64;
    while !finished.load(Ordering::Relaxed) {
        // Wake often to notice the end; redraw every half second.
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        if !ticks.is_multiple_of(5) {
            continue;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let ops = progress.ops.load(Ordering::Relaxed);
        let of = total.map_or(String::new(), |t| format!("/{:.0}s", t.as_secs_f64()));
        let _ = write!(
            stderr,
            "\r{name}: {elapsed:.0}s{of}  {ops} ops ({:.0}/s)  {:.1} MiB/s  errors {}   ",
            ops as f64 / elapsed.max(1e-3),
            progress.bytes.load(Ordering::Relaxed) as f64 / (1u64 << 20) as f64 / elapsed.max(1e-3),
            progress.errors.load(Ordering::Relaxed)
        );
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r{:79}\r", "");
}

/// User and system CPU seconds of this process so far.
pub fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own; no other memory is touched.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

pub fn cpu_since(before: (f64, f64), wall: Duration) -> Cpu {
    let after = cpu_seconds();
    let wall = wall.as_secs_f64().max(1e-9);
    Cpu {
        usr_pct: (after.0 - before.0) / wall * 100.0,
        sys_pct: (after.1 - before.1) / wall * 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn loops_count_operations_per_worker_and_errors_are_kept_apart() {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                move |i: u64| Outcome {
                    class: if i.is_multiple_of(2) { "even" } else { "odd" },
                    bytes: 10,
                    latency: None,
                    error: (w == 0 && i == 1)
                        .then(|| ("boom".to_owned(), "worker 0 failed".to_owned())),
                }
            })
            .collect();
        let collected = closed_loop("t", workers, Pacer::new(Stop::Loops(4), None, 3), false);
        assert_eq!(collected.ops, 11);
        assert_eq!(collected.errors, 1);
        assert_eq!(collected.bytes, 110);
        assert_eq!(collected.error_codes["boom"], 1);
        assert_eq!(collected.error_samples, vec!["worker 0 failed".to_owned()]);
        let report = collected.into_report("t", "query", BTreeMap::new());
        assert_eq!(report.classes["even"].ops, 6);
        assert_eq!(report.classes["odd"].ops, 5);
        assert_eq!(report.classes["odd"].errors, 1);
    }

    #[test]
    fn waves_start_together_after_every_operation_of_the_last_ended() {
        let events = Mutex::new(Vec::new());
        let between = AtomicU64::new(0);
        let workers: Vec<_> = (0..3u64)
            .map(|worker| {
                let events = &events;
                move |op: u64| {
                    events.lock().unwrap().push((op, "start"));
                    // Uneven work, so a worker that finished first would run ahead if it could.
                    std::thread::sleep(Duration::from_millis(2 * worker));
                    events.lock().unwrap().push((op, "end"));
                    Outcome {
                        class: "op",
                        bytes: 0,
                        latency: None,
                        error: None,
                    }
                }
            })
            .collect();
        let waves = Waves::new(
            3,
            Duration::from_millis(5),
            Box::new(|wave| {
                assert_eq!(between.fetch_add(1, Ordering::SeqCst), wave);
            }),
        );
        let pacer = Pacer::new(Stop::Loops(4), None, 3).with_waves(waves);
        let collected = closed_loop("t", workers, pacer, false);
        assert_eq!(collected.ops, 12);
        assert_eq!(
            between.load(Ordering::SeqCst),
            3,
            "between runs between waves only"
        );
        // Every start of wave k comes after every end of wave k - 1.
        let events = events.into_inner().unwrap();
        for (index, &(op, what)) in events.iter().enumerate() {
            if what == "start" && op > 0 {
                let ends_before = events[..index]
                    .iter()
                    .filter(|&&(o, w)| o == op - 1 && w == "end")
                    .count();
                assert_eq!(ends_before, 3, "{events:?}");
            }
        }
    }

    #[test]
    fn a_rate_paces_the_workers() {
        // 2 workers sharing 200 ops/s for 20 ops each: about 0.2 s, not instantly.
        let workers: Vec<_> = (0..2)
            .map(|_| {
                |_| Outcome {
                    class: "op",
                    bytes: 0,
                    latency: None,
                    error: None,
                }
            })
            .collect();
        let collected = closed_loop(
            "t",
            workers,
            Pacer::new(Stop::Loops(20), Some(200), 2),
            false,
        );
        assert_eq!(collected.ops, 40);
        assert!(
            collected.elapsed >= Duration::from_millis(180),
            "{:?}",
            collected.elapsed
        );
    }

    #[test]
    fn runtime_stops_the_job() {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                |_| {
                    std::thread::sleep(Duration::from_millis(5));
                    Outcome {
                        class: "op",
                        bytes: 1,
                        latency: None,
                        error: None,
                    }
                }
            })
            .collect();
        let collected = closed_loop(
            "t",
            workers,
            Pacer::new(Stop::Runtime(Duration::from_millis(200)), None, 2),
            false,
        );
        assert!(
            collected.ops > 10 && collected.ops < 200,
            "{}",
            collected.ops
        );
        assert!(collected.elapsed < Duration::from_secs(2));
    }
}
