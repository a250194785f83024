//! `kind=query`: `numjobs` users run the weighted query mix (`mix=`, default the spec's) or one
//! fixed query (`sql=`) against a target. `kind=scan`: one query repeated on an embedded
//! engine, cold (`cache=cold`, the default: buffer pool and partial-result cache emptied before
//! each run, file metadata kept as a running node keeps it, and O_DIRECT means the page cache
//! never serves it), first-open (`cache=first-open`: the metadata cache emptied too) or warm, reporting the bandwidth of
//! what it read from disk and, with `row_bytes=`, the decoded bytes it scanned per core.
//!
//! A noisy neighbour (`noisy_tenant=`): while the job's users run, `noisy_users` (default 4) more
//! users of that tenant run `noisy_sql` (default a full-table SUM GROUP BY category over its own
//! copy of the table) in a loop; the report gives their rate, and the job's latencies show what
//! the noise did to its tenant. Run the job once without the key for the solo figures.

use crate::job::{Job, JobError, Kind};
use crate::report::JobReport;
use crate::run::{closed_loop, Outcome, Pacer, Waves};
use crate::target::{OpError, Target, User};
use crate::workload::{query, Mix, Rng, SPEC_MIX};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

enum Work {
    Mix(Mix),
    Fixed(String),
}

pub fn run(job: &Job, progress: bool) -> Result<JobReport, JobError> {
    let scan = job.kind == Kind::Scan;
    let users = job.size_or("numjobs", 1)?.max(1) as usize;
    let cache = job.choice(
        "cache",
        &["warm", "cold", "first-open"],
        if scan { "cold" } else { "warm" },
    )?;
    let table = job.str_or("table", "events").to_owned();
    let seed = job.size_or("seed", 42)?;
    let work = match (job.str("sql"), job.str("mix")) {
        (Some(_), Some(_)) => return Err(job.invalid("mix", "give sql= or mix=, not both")),
        (Some(sql), None) => Work::Fixed(sql.to_owned()),
        (None, mix) if !scan => {
            Work::Mix(Mix::parse(mix.unwrap_or(SPEC_MIX)).map_err(|m| job.invalid("mix", m))?)
        }
        (None, _) => Work::Fixed(format!("SELECT SUM(amount) FROM {table}")),
    };
    let target = Target::open(job, users)?;
    if cache != "warm" && target.engine().is_none() {
        return Err(job.invalid("cache", "cache=cold and first-open need target=embedded or target=server (the harness must reach the engine to empty it)"));
    }
    if let Some(rows) = job.size("generate")? {
        target.ensure_events(&table, rows, seed).map_err(|e| {
            job.invalid(
                "generate",
                format!("generating {rows} rows into {table}: {e}"),
            )
        })?;
    }
    let rows = match job.size("rows")?.or(job.size("generate")?) {
        Some(rows) => rows,
        None => count_rows(&target, &table).map_err(|(_, m)| job.invalid("table", m))?,
    };
    // One user per worker; connections are made before the clock starts.
    let handles: Vec<User<'_>> = (0..users)
        .map(|_| target.user())
        .collect::<Result<_, _>>()
        .map_err(|(_, m)| job.invalid("target", format!("cannot connect: {m}")))?;
    let classes_sql = |class: &'static str, rng: &mut Rng| -> (&'static str, String) {
        match &work {
            Work::Mix(_) => (class, query(class, &table, rows, rng)),
            Work::Fixed(sql) => ("query", sql.clone()),
        }
    };
    if cache != "first-open" {
        // Warm-up (not measured): every class once, so the pool holds what the mix reads, and
        // the metadata cache the files' footers (cold is a node whose data pages were evicted,
        // not one that never opened the files).
        let mut rng = Rng::new(seed);
        let classes: Vec<&'static str> = match &work {
            Work::Mix(_) => crate::workload::CLASSES.to_vec(),
            Work::Fixed(_) => vec!["query"],
        };
        for class in classes {
            let (_, sql) = classes_sql(class, &mut rng);
            let warmed = handles[0].query(&sql);
            // Cold runs only want the files opened: a failing query is counted by the runs.
            if cache == "warm" {
                warmed
                    .map_err(|(_, m)| job.invalid("sql", format!("warm-up query failed: {m}")))?;
            }
        }
    }
    let noisy = match job.str("noisy_tenant") {
        Some(tenant) if tenant == target.tenant() => {
            return Err(job.invalid("noisy_tenant", "must be another tenant than the job's"))
        }
        Some(tenant) => {
            let generate = job.size("generate")?.unwrap_or(rows);
            target
                .ensure_events_as(tenant, &table, generate, seed)
                .map_err(|e| job.invalid("noisy_tenant", e))?;
            let sql = job.str("noisy_sql").map(str::to_owned).unwrap_or_else(|| {
                format!("SELECT category, SUM(amount) FROM {table} GROUP BY category")
            });
            let users = (0..job.size_or("noisy_users", 4)?.max(1))
                .map(|_| target.user_as(tenant))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|(_, m)| job.invalid("noisy_tenant", format!("cannot connect: {m}")))?;
            // The noise is running before the clock starts.
            users[0]
                .query(&sql)
                .map_err(|(_, m)| job.invalid("noisy_sql", m))?;
            Some((users, sql))
        }
        None => None,
    };
    let noise_stop = std::sync::atomic::AtomicBool::new(false);
    let (noise_ops, noise_errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let rows_scanned = AtomicU64::new(0);
    // Per class: queries, server-measured queue and run time (µs), summed, and each query's
    // total (µs) for percentiles.
    type ServerTimes = BTreeMap<&'static str, (u64, u64, u64, Vec<u64>)>;
    let server_times: Mutex<ServerTimes> = Mutex::default();
    // Emptying caches is a whole-engine action: cold users take turns.
    let cold_turn = Mutex::new(());
    let engine = target.engine();
    let workers: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let mut rng = Rng::new(seed ^ (index as u64 + 1));
            let (work, rows_scanned, cold_turn) = (&work, &rows_scanned, &cold_turn);
            let server_times = &server_times;
            let classes_sql = &classes_sql;
            move |_| {
                let class = match work {
                    Work::Mix(mix) => mix.pick(&mut rng),
                    Work::Fixed(_) => "query",
                };
                let (class, sql) = classes_sql(class, &mut rng);
                let _turn =
                    (cache != "warm").then(|| cold_turn.lock().unwrap_or_else(|e| e.into_inner()));
                match (engine, &_turn) {
                    (Some(engine), Some(_)) if cache == "first-open" => engine.clear_all_caches(),
                    (Some(engine), Some(_)) => engine.clear_caches(),
                    _ => {}
                }
                let started = std::time::Instant::now();
                let result: Result<_, OpError> = user.query(&sql);
                let latency = started.elapsed();
                match result {
                    Ok(answer) => {
                        rows_scanned.fetch_add(answer.rows_scanned, Ordering::Relaxed);
                        if let (Some(queued), Some(run)) = (answer.queued, answer.engine_time) {
                            let mut times = server_times.lock().unwrap_or_else(|e| e.into_inner());
                            let entry = times.entry(class).or_default();
                            entry.0 += 1;
                            entry.1 += queued.as_micros() as u64;
                            entry.2 += run.as_micros() as u64;
                            entry.3.push((queued + run).as_micros() as u64);
                        }
                        Outcome {
                            class,
                            bytes: answer.bytes_read,
                            latency: Some(latency),
                            error: None,
                        }
                    }
                    Err(error) => Outcome {
                        class,
                        bytes: 0,
                        latency: Some(latency),
                        error: Some(error),
                    },
                }
            }
        })
        .collect();
    let mut pacer = Pacer::new(job.stop()?, job.size("rate_iops")?, users);
    let pause_ms = job.size("pause_ms")?;
    let ingest_per_wave = job.size_or("ingest_per_wave", 0)?;
    if let Some(pause) = pause_ms {
        // New rows arrive between waves through streaming ingestion, durable before the next.
        let ingest: Box<dyn Fn(u64) + Send + Sync + '_> =
            match (ingest_per_wave, engine) {
                (0, _) => Box::new(|_| {}),
                (per_wave, Some(engine)) => {
                    let (tenant, table) = (target.tenant().to_owned(), table.clone());
                    // A producer per job, so a job file's jobs do not collide in one window.
                    let producer = format!("bench-waves-{}", job.name);
                    Box::new(move |wave: u64| {
                        let first = rows + wave * per_wave;
                        let batch =
                            tessera_storage_engine::gen::events_chunk(first, per_wave, rows, seed);
                        let mut ipc = Vec::new();
                        let written =
                            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())
                                .and_then(|mut w| {
                                    w.write(&batch)?;
                                    w.finish()
                                });
                        let acked = written.map_err(|e| e.to_string()).and_then(|()| {
                            engine
                                .ingest(&tenant, &table, &producer, wave, ipc)
                                .map_err(|e| e.to_string())
                        });
                        if let Err(error) = acked {
                            eprintln!("ingest between waves failed: {error}");
                        }
                    })
                }
                (_, None) => return Err(job.invalid(
                    "ingest_per_wave",
                    "needs target=embedded or target=server (the harness ingests into its engine)",
                )),
            };
        pacer = pacer.with_waves(Waves::new(users, Duration::from_millis(pause), ingest));
    }
    let noise_started = std::time::Instant::now();
    let collected = std::thread::scope(|scope| {
        if let Some((users, sql)) = &noisy {
            for user in users {
                let sql = sql.as_str();
                let (stop, ops, errors) = (&noise_stop, &noise_ops, &noise_errors);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match user.query(sql) {
                            Ok(_) => ops.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                });
            }
        }
        let collected = closed_loop(&job.name, workers, pacer, progress);
        noise_stop.store(true, Ordering::Relaxed);
        collected
    });
    let noise_seconds = noise_started.elapsed().as_secs_f64().max(1e-9);
    let elapsed = collected.elapsed.as_secs_f64().max(1e-9);
    let mut settings = BTreeMap::new();
    settings.insert("target".into(), job.str_or("target", "embedded").to_owned());
    settings.insert("users".into(), users.to_string());
    settings.insert("cache".into(), cache.to_owned());
    if let Some(pause) = pause_ms {
        settings.insert("waves".into(), format!("{users} queries, then {pause} ms"));
        settings.insert("ingest_per_wave".into(), ingest_per_wave.to_string());
    }
    settings.insert("rows".into(), rows.to_string());
    if let Work::Fixed(sql) = &work {
        settings.insert("sql".into(), sql.clone());
    }
    if let Some((users, sql)) = &noisy {
        settings.insert(
            "noisy".into(),
            format!(
                "tenant {} x {} users: {sql}",
                job.str_or("noisy_tenant", ""),
                users.len()
            ),
        );
    }
    let mut report = collected.into_report(&job.name, job.kind.name(), settings);
    if noisy.is_some() {
        let ops = noise_ops.load(Ordering::Relaxed) as f64;
        report
            .extra
            .insert("noisy_ops_per_s".into(), ops / noise_seconds);
        report.extra.insert(
            "noisy_errors".into(),
            noise_errors.load(Ordering::Relaxed) as f64,
        );
    }
    let scanned = rows_scanned.load(Ordering::Relaxed) as f64;
    // What the server measured: how long queries waited (from arrival) and ran, on average.
    for (class, (count, queued, run, mut totals)) in server_times.into_inner().unwrap_or_default() {
        // The node's own view of the tail: from arrival on its connection to the last batch.
        totals.sort_unstable();
        for (name, q) in [("p50", 0.50), ("p99", 0.99)] {
            let at = ((totals.len() as f64 * q).ceil() as usize).clamp(1, totals.len().max(1)) - 1;
            if let Some(micros) = totals.get(at) {
                report
                    .extra
                    .insert(format!("{class}_server_{name}_ms"), *micros as f64 / 1e3);
            }
        }
        let count = count.max(1) as f64;
        report.extra.insert(
            format!("{class}_server_queue_ms"),
            queued as f64 / count / 1e3,
        );
        report
            .extra
            .insert(format!("{class}_server_run_ms"), run as f64 / count / 1e3);
    }
    report
        .extra
        .insert("rows_scanned_per_s".into(), scanned / elapsed);
    if let Some(cores) = target.cores() {
        report.extra.insert("cores".into(), cores as f64);
        if let Some(row_bytes) = job.size("row_bytes")? {
            report.extra.insert(
                "per_core_scanned_bytes_per_s".into(),
                scanned * row_bytes as f64 / elapsed / cores as f64,
            );
        }
    }
    Ok(report)
}

fn count_rows(target: &Target, table: &str) -> Result<u64, OpError> {
    let answer = target
        .user()?
        .query(&format!("SELECT COUNT(*) FROM {table}"))?;
    let column = answer
        .batches
        .first()
        .filter(|b| b.num_rows() == 1)
        .map(|b| b.column(0).clone())
        .ok_or_else(|| {
            (
                "data".to_owned(),
                format!("SELECT COUNT(*) FROM {table} returned no row"),
            )
        })?;
    arrow_array::cast::AsArray::as_primitive_opt::<arrow_array::types::Int64Type>(column.as_ref())
        .map(|a| a.value(0).max(0) as u64)
        .ok_or_else(|| ("data".to_owned(), "COUNT(*) is not an int64".to_owned()))
}
