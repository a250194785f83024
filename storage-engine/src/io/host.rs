//! What the host allows the node: which CPUs (the affinity mask that cgroup cpusets, containers
//! and `taskset` set), how many open descriptors, how much locked memory. The decisions are pure
//! functions of those facts, tested on their own; the few calls that read the facts sit beside
//! them.

use crate::error::{Error, Result};

/// The CPUs this process may run on, in increasing order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is this thread; `set` is ours and `size` is its size.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..count).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPU each executor is pinned to, or `None` to let the OS place them. Explicit `requested`
/// CPUs must lie in `allowed` and number `cores`; otherwise, with `pin`, executor i takes the
/// i-th allowed CPU (not CPU i, which may be outside the allowed set), when there are enough.
pub fn choose_cpus(
    allowed: &[usize],
    requested: Option<&[usize]>,
    cores: usize,
    pin: bool,
) -> Result<Option<Vec<usize>>> {
    let Some(requested) = requested else {
        return Ok((pin && cores <= allowed.len()).then(|| allowed[..cores].to_vec()));
    };
    if requested.len() != cores {
        return Err(Error::Config(format!(
            "{} CPUs chosen for {cores} cores; choose one CPU per core",
            requested.len()
        )));
    }
    for (i, cpu) in requested.iter().enumerate() {
        if !allowed.contains(cpu) {
            return Err(Error::Config(format!(
                "CPU {cpu} is not in this process's allowed set ({})",
                format_cpu_list(allowed)
            )));
        }
        if requested[..i].contains(cpu) {
            return Err(Error::Config(format!("CPU {cpu} is chosen twice")));
        }
    }
    Ok(Some(requested.to_vec()))
}

/// Parses a CPU list as `taskset -c` and cgroups write them: `0-3,6,8-9`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>> {
    let bad =
        |part: &str| Error::Config(format!("bad CPU list {text:?} at {part:?}: use e.g. 0-3,6"));
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| bad(part))?;
        let last: usize = last.parse().map_err(|_| bad(part))?;
        if first > last || last >= libc::CPU_SETSIZE as usize {
            return Err(bad(part));
        }
        cpus.extend(first..=last);
    }
    Ok(cpus)
}

fn format_cpu_list(cpus: &[usize]) -> String {
    let parts: Vec<String> = cpus.iter().map(usize::to_string).collect();
    parts.join(",")
}

/// Raises this process's open-descriptor limit to its hard limit; returns the soft limit now in
/// force. Descriptors are per process, so cached open files share it with every connection.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Open data files each core may keep cached: half the descriptor limit (the rest is for
/// connections, the data-directory lock and files being written), shared by the cores.
pub fn cached_files_per_core(open_files_limit: u64, cores: usize) -> usize {
    ((open_files_limit / 2) as usize / cores.max(1)).max(16)
}

const IO_MEMORY_PREFERRED: usize = 16 << 20;
/// Below this glommio refuses to start an executor (`MemLockLimit`).
const IO_MEMORY_MINIMUM: usize = 512 << 10;

/// Registered I/O memory per executor (each pins 3x it). With CAP_IPC_LOCK the memlock limit
/// does not apply; without it (any user, and root in most containers) the size fits
/// RLIMIT_MEMLOCK, and a limit too small even for the minimum is an error saying what to raise.
pub fn io_memory_per_core(cores: usize) -> Result<usize> {
    fit_io_memory(memlock_limit(), has_ipc_lock(), cores)
}

fn fit_io_memory(limit: Option<u64>, ipc_lock: bool, cores: usize) -> Result<usize> {
    let Some(limit) = limit.filter(|_| !ipc_lock) else {
        return Ok(IO_MEMORY_PREFERRED);
    };
    let fits = (limit / (3 * cores.max(1)) as u64) as usize;
    if fits < IO_MEMORY_MINIMUM {
        return Err(Error::Config(format!(
            "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {limit} bytes; {cores} cores need at least {} (3 x 512 KiB each): raise it (systemd: LimitMEMLOCK=) or use fewer cores",
            3 * IO_MEMORY_MINIMUM * cores
        )));
    }
    Ok(fits.min(IO_MEMORY_PREFERRED))
}

/// RLIMIT_MEMLOCK's soft limit; `None` when unlimited.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Whether this process holds CAP_IPC_LOCK (bit 14 of its effective capabilities).
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Lowers the calling thread's CPU priority (nice 10), so background work (compaction) yields
/// the CPU to the cores serving queries. On Linux, `PRIO_PROCESS` with id 0 names the calling
/// thread only. Best effort: a refusal leaves the priority as it was.
pub fn lower_thread_priority() {
    // SAFETY: setpriority reads no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_take_the_allowed_cpus_not_the_first_ones() {
        let allowed = [2, 3, 6, 7];
        assert_eq!(
            choose_cpus(&allowed, None, 2, true).unwrap(),
            Some(vec![2, 3])
        );
        assert_eq!(
            choose_cpus(&allowed, None, 5, true).unwrap(),
            None,
            "more cores than CPUs"
        );
        assert_eq!(choose_cpus(&allowed, None, 2, false).unwrap(), None);
        assert_eq!(
            choose_cpus(&allowed, Some(&[7, 2]), 2, true).unwrap(),
            Some(vec![7, 2])
        );
        let outside = choose_cpus(&allowed, Some(&[2, 4]), 2, true).unwrap_err();
        assert!(outside.to_string().contains("CPU 4 is not in"), "{outside}");
        assert!(choose_cpus(&allowed, Some(&[2, 2]), 2, true).is_err());
        assert!(choose_cpus(&allowed, Some(&[2]), 2, true).is_err());
    }

    #[test]
    fn cpu_lists_parse_as_taskset_writes_them() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list(" 5 ").unwrap(), vec![5]);
        for bad in ["", "a", "3-1", "1,,2", "-1", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn io_memory_fits_the_memlock_limit_unless_the_process_may_exceed_it() {
        assert_eq!(fit_io_memory(None, false, 4).unwrap(), 16 << 20);
        assert_eq!(fit_io_memory(Some(8 << 20), true, 4).unwrap(), 16 << 20);
        // 8 MiB over 2 cores x 3 rings.
        assert_eq!(
            fit_io_memory(Some(8 << 20), false, 2).unwrap(),
            (8 << 20) / 6
        );
        let error = fit_io_memory(Some(64 << 10), false, 2).unwrap_err();
        assert!(error.to_string().contains("LimitMEMLOCK"), "{error}");
    }

    #[test]
    fn the_process_runs_on_some_allowed_cpu_and_may_open_files() {
        assert!(!allowed_cpus().is_empty());
        assert!(raise_open_files_limit() >= 16);
        assert_eq!(cached_files_per_core(1024, 2), 256);
        assert_eq!(cached_files_per_core(10, 8), 16);
    }
}
