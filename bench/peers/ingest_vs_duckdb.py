"""Streaming ingestion against DuckDB turning the same input into date-partitioned Parquet.

Both sides read the same Parquet files (`tessera gen events`) from the page cache:
- Tessera: `tessera ingest --workers W --batch-mb B` into a `tessera serve` on loopback; the
  time ends when the last batch is acknowledged, i.e. durable in the node's write-ahead log
  (fsynced) and visible to queries. Reported with the server's peak RSS.
- DuckDB: `COPY (SELECT *, CAST(timestamp AS DATE) AS date FROM read_parquet(...)) TO dir
  (FORMAT parquet, PARTITION_BY (date))`, then `sync` so its files are on disk too (DuckDB
  fsyncs nothing per batch: it is one bulk job that either finishes or leaves nothing usable).

Runs alternate (tessera, duckdb, tessera, duckdb, ...) so both see the same machine state;
medians and the ratio are printed as a Markdown table for bench/RESULTS.md.

    python3 bench/peers/ingest_vs_duckdb.py --tessera target/release/tessera --rows 20000000
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def serve(tessera, data, secret):
    server = subprocess.Popen(
        [tessera, "serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "off",
         "--jwt-secret-file", secret],
        stderr=subprocess.PIPE, text=True)
    said = []
    for line in server.stderr:
        said.append(line)
        match = re.search(r"tessera serving .* on ([0-9.:\[\]]+)", line)
        if match:
            return server, match.group(1)
    raise SystemExit("tessera serve did not start:\n" + "".join(said))


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_tessera(tessera, input_dir, work, workers, batch_mb):
    data = os.path.join(work, "tessera-data")
    shutil.rmtree(data, ignore_errors=True)
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write("a benchmark secret that is long enough\n")
    token = subprocess.check_output(
        [tessera, "token", "--secret-file", secret, "--tenant", "bench", "--role", "admin"],
        text=True).strip()
    server, address = serve(tessera, data, secret)
    try:
        started = time.perf_counter()
        out = subprocess.run(
            [tessera, "ingest", "--addr", address, "--token", token, "--table", "events",
             "--workers", str(workers), "--batch-mb", str(batch_mb), input_dir],
            capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"tessera ingest failed:\n{out.stdout}\n{out.stderr}")
        fields = dict(re.findall(r"^(\w[\w ]*?\S)\s{2,}(.+)$", out.stdout, re.M))
        return {
            "seconds": seconds,
            "rows": int(fields["rows acknowledged"]),
            "raw_mb": float(fields["MB acknowledged"]),
            "ack": fields.get("ack latency", ""),
            "rss_mib": peak_rss_mib(server.pid),
        }
    finally:
        server.kill()
        server.wait()


def run_duckdb(input_dir, work):
    import duckdb

    out = os.path.join(work, "duckdb-out")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.sql(
        f"COPY (SELECT *, CAST(timestamp AS DATE) AS date "
        f"FROM read_parquet('{input_dir}/*.parquet')) TO '{out}' "
        f"(FORMAT parquet, PARTITION_BY (date))")
    con.close()
    os.sync()
    return {"seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tessera", default="target/release/tessera")
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="tessera-ingest-bench-")
    input_dir = os.path.join(work, "input")
    if not os.path.isdir(input_dir):
        subprocess.check_call([args.tessera, "gen", "events", "--rows", str(args.rows),
                               "--out", input_dir])
    input_mb = sum(os.path.getsize(os.path.join(input_dir, f))
                   for f in os.listdir(input_dir)) / 1e6
    tessera_runs, duckdb_runs = [], []
    for _ in range(args.repeat):
        tessera_runs.append(run_tessera(args.tessera, input_dir, work, args.workers,
                                        args.batch_mb))
        duckdb_runs.append(run_duckdb(input_dir, work))
    t = statistics.median(r["seconds"] for r in tessera_runs)
    d = statistics.median(r["seconds"] for r in duckdb_runs)
    last = tessera_runs[-1]
    print(f"input: {args.rows:,} rows, {input_mb:.0f} MB of Parquet, "
          f"{last['raw_mb']:.0f} MB of raw (Arrow) event data; {args.repeat} runs each, "
          f"alternating; medians")
    print()
    print("| engine | seconds | rows/s | raw MB/s | notes |")
    print("|---|---|---|---|---|")
    print(f"| Tessera ingest ({args.workers} workers, {args.batch_mb} MB batches) | {t:.2f} | "
          f"{last['rows'] / t:,.0f} | {last['raw_mb'] / t:.0f} | durable per batch; "
          f"{last['ack']}; server peak RSS {last['rss_mib']:.0f} MiB |")
    print(f"| DuckDB COPY ... PARTITION_BY (date) | {d:.2f} | {last['rows'] / d:,.0f} | "
          f"{last['raw_mb'] / d:.0f} | one bulk job, then sync |")
    print()
    print(f"Tessera / DuckDB time: {t / d:.2f} (below 1: Tessera is faster)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
