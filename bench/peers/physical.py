"""Machine description, and the physical-limit and query-mix runs (fio and `tessera-bench JOBFILE`).

Each runner returns a dict that goes into the results file as it is: the parsed JSON under
"json" when the run worked, or "skipped"/"error" saying why not. Nothing here raises for a
missing tool or job file: the comparison with peers is still worth having without them.
"""

import json
import os
import platform
import shutil
import subprocess

JOB_TIMEOUT_S = 1800


def machine(data_dir):
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_bytes = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_bytes = int(line.split()[1]) * 1024
    except OSError:
        pass
    usage = shutil.disk_usage(data_dir)
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "cores": len(os.sched_getaffinity(0)),
        "memory_bytes": memory_bytes,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "disk_free_bytes": usage.free,
        "disk_total_bytes": usage.total,
        "data_dir": os.path.abspath(data_dir),
    }


def parse_json_output(text):
    """fio can print warnings before its JSON: parse from the first '{'."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in output")
    return json.loads(text[start:])


def run_json(command, env_extra, cwd):
    env = dict(os.environ)
    env.update(env_extra)
    print("  $ " + " ".join(f"{k}={v}" for k, v in env_extra.items()) + " " + " ".join(command), flush=True)
    try:
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"command": command, "env": env_extra, "error": str(error)}
    result = {"command": command, "env": env_extra, "exit_code": done.returncode}
    if done.returncode != 0:
        result["error"] = f"exit code {done.returncode}: {done.stderr.strip()[-2000:]}"
        return result
    try:
        result["json"] = parse_json_output(done.stdout)
    except ValueError as error:
        result["error"] = f"output is not JSON ({error}): {done.stdout[:500]!r}"
    return result


def ensure_fio():
    """The fio binary, installing Debian's package when we are root; None when it cannot be had."""
    if shutil.which("fio"):
        return shutil.which("fio")
    if os.geteuid() != 0:
        return None
    print("  fio is missing: apt-get install -y fio", flush=True)
    subprocess.run(["apt-get", "install", "-y", "fio"], capture_output=True)
    if not shutil.which("fio"):
        subprocess.run(["apt-get", "update"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "fio"], capture_output=True)
    return shutil.which("fio")


def fio_version(fio):
    done = subprocess.run([fio, "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def job_by_name(parsed, name):
    for job in parsed.get("jobs", []):
        if job.get("jobname") == name:
            return job
    return None


# Per-core figures the jobs report, in the order looked for (scan jobs report scanned bytes per
# core, membw per thread; a membw thread is one core's read bandwidth).
PER_CORE_KEYS = ("per_core_bytes_per_s", "per_core_scanned_bytes_per_s", "per_thread_bytes_per_s")


def per_core(job, cores):
    """A job's per-core bandwidth and where it came from (else bw_bytes_per_s / the job's cores)."""
    extra = job.get("extra") or {}
    for key in PER_CORE_KEYS:
        if extra.get(key):
            return float(extra[key]), f"extra.{key}"
    if job.get("bw_bytes_per_s"):
        job_cores = int(extra.get("cores") or cores)
        return float(job["bw_bytes_per_s"]) / job_cores, f"bw_bytes_per_s / {job_cores} cores"
    return None, "missing"


def physical_limits(repo, bench_binary, data_dir, rows, rawio_file, cores):
    """fio vs tessera-bench raw sequential reads, then scan-cold/scan-warm/membw; with fractions."""
    jobs = os.path.join(repo, "bench", "jobs")
    section = {}
    fio = ensure_fio()
    fio_job = os.path.join(jobs, "fio-rawio-seq.fio")
    if fio is None:
        section["fio"] = {"skipped": "fio is not installed and could not be installed"}
    elif not os.path.exists(fio_job):
        section["fio"] = {"skipped": f"{fio_job} does not exist"}
    else:
        section["fio"] = run_json([fio, "--output-format=json", fio_job], {"TESSERA_BENCH_FILE": rawio_file}, repo)
        section["fio"]["version"] = fio_version(fio)
    for name, job_file, env in (
        ("rawio", "rawio-seq.fio", {"TESSERA_BENCH_FILE": rawio_file}),
        ("scan", "scan.fio", {"TESSERA_BENCH_DATA": data_dir, "TESSERA_BENCH_ROWS": str(rows)}),
    ):
        path = os.path.join(jobs, job_file)
        if not os.path.exists(path):
            section[name] = {"skipped": f"{path} does not exist"}
            continue
        section[name] = run_json([bench_binary, "--output-format=json", path], env, repo)
    section["fractions"] = fractions(section, cores)
    return section


def fractions(section, cores):
    found = {}
    fio_bw = None
    try:
        fio_bw = float(section["fio"]["json"]["jobs"][0]["read"]["bw_bytes"])
        found["fio_seq_bw_bytes_per_s"] = fio_bw
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    rawio = section.get("rawio", {}).get("json")
    if rawio and rawio.get("jobs"):
        found["tessera_rawio_seq_bw_bytes_per_s"] = float(rawio["jobs"][0].get("bw_bytes_per_s") or 0)
        if fio_bw:
            found["rawio_over_fio"] = found["tessera_rawio_seq_bw_bytes_per_s"] / fio_bw
    scan = section.get("scan", {}).get("json") or {}
    cold = job_by_name(scan, "scan-cold")
    if cold is not None:
        found["scan_cold_bw_bytes_per_s"] = float(cold.get("bw_bytes_per_s") or 0)
        if fio_bw:
            found["scan_cold_over_fio"] = found["scan_cold_bw_bytes_per_s"] / fio_bw
    warm = job_by_name(scan, "scan-warm")
    membw = job_by_name(scan, "membw")
    if warm is not None and membw is not None:
        warm_per_core, warm_source = per_core(warm, cores)
        mem_per_core, mem_source = per_core(membw, cores)
        found["scan_warm_per_core_bytes_per_s"] = warm_per_core
        found["scan_warm_per_core_source"] = warm_source
        found["membw_per_core_bytes_per_s"] = mem_per_core
        found["membw_per_core_source"] = mem_source
        if warm_per_core and mem_per_core:
            found["scan_warm_over_membw"] = warm_per_core / mem_per_core
    return found


def query_mix(repo, bench_binary, data_dir, rows, runtime_s):
    """The query-mix job; it starts its own server on the data directory (the agent must be gone)."""
    path = os.path.join(repo, "bench", "jobs", "query-mix.fio")
    if not os.path.exists(path):
        return {"skipped": f"{path} does not exist"}
    env = {"TESSERA_BENCH_DATA": data_dir, "TESSERA_BENCH_ROWS": str(rows)}
    if runtime_s:
        env["TESSERA_BENCH_RUNTIME"] = str(runtime_s)
    return run_json([bench_binary, "--output-format=json", path], env, repo)
