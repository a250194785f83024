#!/usr/bin/env python3
"""Peer comparison: Tessera (embedded and over RPC) against DuckDB, DataFusion, chDB and Polars.

    python3 bench/peers/run.py [--rows 20000000] [--lineitem-sf 1] [--runs 5] [--dir ./bench-data]
        [--engines tessera,tessera-rpc,duckdb,...] [--queries q01,q02,...] [--no-fio] [--no-mix]
        [--quick] [--no-build | --bin-dir DIR]

Steps: a virtualenv with pinned peers (bench/.venv), a release build, the events data (the
generator's Parquet files for the peers, Tessera's imported table for Tessera), the TPC-H
`lineitem` data when a selected query reads it (one Parquet file written by DuckDB's dbgen, run in
a virtualenv of its own with DuckDB 1.5.5 and its tpch extension, for the peers; the same file
imported as table `lineitem` into the same Tessera data directory for Tessera), then every query
cold and warm, interleaved: for each query, for each mode, for each repetition, every engine runs
once, in an order rotated each repetition, so drift on a noisy machine hits all engines alike.
Every answer is checked against the reference engine's (Tessera embedded) and any difference
stops the run. Then the physical-limit jobs (fio and tessera-bench) and the query mix, the
results file bench/results/<date>-<host>.json, and bench/RESULTS.md with charts.
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
ALL_ENGINES = ["tessera", "tessera-rpc", "duckdb", "datafusion", "datafusion-pushdown", "chdb", "polars"]
MODES = ("cold", "warm")
TENANT = "bench"
TABLE = "events"
QUICK_ROWS = 200_000
QUICK_RUNS = 2
QUICK_MIX_RUNTIME_S = 10
LINEITEM = "lineitem"
LINEITEM_SF = 1.0
QUICK_LINEITEM_SF = 0.1
# DuckDB 2.0 (the peer) has no tpch extension wheel: dbgen runs in a venv of its own with these.
TPCH_PINS = ["duckdb==1.5.5", "duckdb-extension-tpch==1.5.5"]
# Rows per row group of the lineitem file: few large row groups, ~128 MB each (DuckDB's
# snappy-compressed lineitem is ~30 bytes a row), as a foreign writer's file would have them.
LINEITEM_ROW_GROUP_ROWS = 4_194_304
# Tessera's import of it: few large row groups too, and one file up to 4 GiB.
LINEITEM_IMPORT_OPTIONS = ["--row-group-mib", "128", "--file-mib", "4096"]
# Run by the tpch venv's python: argv = out path, scale factor, threads, rows per row group.
DBGEN_SCRIPT = """
import glob, os, sys
import duckdb, duckdb_extension_tpch
out, sf, threads, group_rows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
here = os.path.dirname(duckdb_extension_tpch.__file__)
found = glob.glob(os.path.join(here, "extensions", "*", "tpch.duckdb_extension"))
if len(found) != 1:
    sys.exit(f"expected one tpch.duckdb_extension under {here}, found {found}")
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"SET threads = {threads}")
con.execute(f"LOAD '{found[0]}'")
con.execute(f"CALL dbgen(sf={sf})")
con.execute(f"COPY lineitem TO '{out}' (FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE {group_rows})")
print(f"lineitem: {con.execute('SELECT COUNT(*) FROM lineitem').fetchone()[0]} rows, DuckDB {duckdb.__version__}")
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--lineitem-sf", type=float, default=None,
                        help=f"TPC-H scale factor of lineitem (default {LINEITEM_SF:g}; --quick: {QUICK_LINEITEM_SF:g})")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per query, mode and engine")
    parser.add_argument("--dir", default="./bench-data", help="data directory (reused across runs)")
    parser.add_argument("--engines", default=",".join(ALL_ENGINES))
    parser.add_argument("--queries", default="", help="comma-separated query ids (default: all)")
    parser.add_argument("--no-fio", action="store_true", help="skip the physical-limit jobs")
    parser.add_argument("--no-mix", action="store_true", help="skip the query-mix job")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS} rows, lineitem at sf {QUICK_LINEITEM_SF:g}, {QUICK_RUNS} runs")
    parser.add_argument("--venv", default=os.path.join(REPO, "bench", ".venv"))
    parser.add_argument("--tpch-venv", default=None,
                        help="virtualenv for DuckDB's dbgen (default: tpch-venv in the --dir data directory)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries in target/release as they are")
    parser.add_argument("--bin-dir", default=None,
                        help="use tessera and tessera-bench from this directory as they are (implies --no-build)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs = QUICK_ROWS, QUICK_RUNS
    if args.lineitem_sf is None:
        args.lineitem_sf = QUICK_LINEITEM_SF if args.quick else LINEITEM_SF
    if args.bin_dir:
        args.no_build = True
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ALL_ENGINES]
    if unknown or not args.engines:
        parser.error(f"unknown engine(s) {unknown}; known: {', '.join(ALL_ENGINES)}")
    args.queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    if args.runs < 1 or args.rows < 1 or args.lineitem_sf <= 0:
        parser.error("--rows, --runs and --lineitem-sf must be positive")
    return args


def ensure_venv(venv):
    """Re-exec under the venv's python, creating it and installing the pins when needed."""
    venv = os.path.abspath(venv)
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"== creating virtualenv {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    with open(REQUIREMENTS, "rb") as f:
        wanted = hashlib.sha256(f.read()).hexdigest()
    marker = os.path.join(venv, ".requirements.sha256")
    installed = open(marker).read().strip() if os.path.exists(marker) else ""
    if installed != wanted:
        print(f"== pip install -r {os.path.relpath(REQUIREMENTS)}", flush=True)
        done = subprocess.run([python, "-m", "pip", "install", "-r", REQUIREMENTS])
        if done.returncode != 0:
            sys.exit(f"pip install failed (exit {done.returncode}): see the pip output above for the package")
        with open(marker, "w") as f:
            f.write(wanted + "\n")
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def build():
    command = ["cargo", "build", "--release", "-p", "tessera-tools", "-p", "tessera-bench"]
    print("== " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        sys.exit("cargo build failed")


def prepare_data(tessera, data_root, rows):
    """Generate and import the events table unless already there; returns (parquet files, data dir)."""
    events_dir = os.path.join(data_root, f"events-{rows}")
    data_dir = os.path.join(data_root, f"data-{rows}")
    files = sorted(glob.glob(os.path.join(events_dir, "*.parquet")))
    if not files:
        print(f"== generating {rows} rows into {events_dir}", flush=True)
        os.makedirs(data_root, exist_ok=True)
        run_checked([tessera, "gen", "events", "--rows", str(rows), "--out", events_dir])
        files = sorted(glob.glob(os.path.join(events_dir, "*.parquet")))
    manifest = os.path.join(data_dir, TENANT, TABLE, "_manifest.json")
    if not os.path.exists(manifest):
        if os.path.exists(data_dir):
            sys.exit(f"{data_dir} exists without {manifest}: remove it and run again")
        print(f"== importing into {data_dir} (tenant {TENANT}, table {TABLE})", flush=True)
        run_checked([tessera, "import", "--data", data_dir, "--tenant", TENANT, "--table", TABLE] + files)
    return files, data_dir


def ensure_tpch_venv(venv):
    """The virtualenv dbgen runs in (DuckDB 1.5.5 and its tpch extension); returns its python."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"== creating virtualenv {venv} for dbgen", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    marker = os.path.join(venv, ".tpch-pins")
    wanted = " ".join(TPCH_PINS)
    installed = open(marker).read().strip() if os.path.exists(marker) else ""
    if installed != wanted:
        print(f"== pip install {wanted} into {venv}", flush=True)
        done = subprocess.run([python, "-m", "pip", "install"] + TPCH_PINS)
        if done.returncode != 0:
            sys.exit(f"pip install failed (exit {done.returncode}): see the pip output above")
        with open(marker, "w") as f:
            f.write(wanted + "\n")
    return python


def manifest_rows(manifest):
    with open(manifest) as f:
        return sum(entry["rows"] for entry in json.load(f)["files"])


def prepare_lineitem(tessera, data_root, data_dir, sf, tpch_venv, cores):
    """Generate TPC-H lineitem at `sf` with DuckDB's dbgen into one Parquet file unless already
    there, and import it as table `lineitem` into `data_dir` unless already there; returns [file]."""
    import pyarrow.parquet

    path = os.path.join(data_root, f"lineitem-sf{sf:g}", "lineitem.parquet")
    if not os.path.exists(path):
        python = ensure_tpch_venv(tpch_venv)
        print(f"== generating TPC-H lineitem at sf {sf:g} into {path} (DuckDB dbgen)", flush=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = path + ".partial"  # renamed when complete, so a broken run is never reused
        run_checked([python, "-c", DBGEN_SCRIPT, partial, repr(sf), str(cores), str(LINEITEM_ROW_GROUP_ROWS)])
        os.rename(partial, path)
    rows = pyarrow.parquet.ParquetFile(path).metadata.num_rows
    table_dir = os.path.join(data_dir, TENANT, LINEITEM)
    manifest = os.path.join(table_dir, "_manifest.json")
    if not os.path.exists(manifest):
        if os.path.exists(table_dir):
            sys.exit(f"{table_dir} exists without {manifest}: remove it and run again")
        # No --time-column: lineitem has no TIMESTAMP column, so the table is not partitioned and
        # keeps dbgen's row order (by l_orderkey), as the peers' file does. (Partitioning by the
        # DATE l_shipdate would cut ~2,500 one-day files, the opposite of the foreign layout; this
        # build's import also panics on a DATE --time-column.)
        print(f"== importing {path} into {data_dir} (tenant {TENANT}, table {LINEITEM})", flush=True)
        run_checked([tessera, "import", "--data", data_dir, "--tenant", TENANT, "--table", LINEITEM]
                    + LINEITEM_IMPORT_OPTIONS + [path])
    imported = manifest_rows(manifest)
    if imported != rows:
        sys.exit(f"{table_dir} holds {imported} rows, {path} {rows} (another --lineitem-sf?): "
                 f"remove {table_dir} and run again")
    return [path]


def run_checked(command):
    if subprocess.run(command).returncode != 0:
        sys.exit("failed: " + " ".join(command))


def files_under(directory):
    found = []
    for root, _, names in os.walk(directory):
        found.extend(os.path.join(root, name) for name in names)
    return sorted(found)


def parquet_layout(files):
    """What the peers read: files, bytes, rows per file, row groups and rows per row group."""
    import pyarrow.parquet

    layout = {"files": files, "bytes": sum(os.path.getsize(f) for f in files), "rows_per_file": [], "row_groups": 0}
    rows_per_group = set()
    for path in files:
        metadata = pyarrow.parquet.ParquetFile(path).metadata
        layout["rows_per_file"].append(metadata.num_rows)
        layout["row_groups"] += metadata.num_row_groups
        rows_per_group.update(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
        layout["compression"] = metadata.row_group(0).column(0).compression if metadata.num_row_groups else "?"
    layout["max_rows_per_row_group"] = max(rows_per_group, default=0)
    return layout


def tessera_layout(data_dir, table):
    """Tessera's files of one table: count and bytes of all, row groups of its Parquet files."""
    found = files_under(os.path.join(data_dir, TENANT, table))
    parquet = parquet_layout([f for f in found if f.endswith(".parquet")])
    return {"dir": data_dir, "files": len(found), "bytes": sum(os.path.getsize(f) for f in found),
            "row_groups": parquet["row_groups"], "max_rows_per_row_group": parquet["max_rows_per_row_group"]}


def agent_available(bench_binary):
    try:
        done = subprocess.run([bench_binary, "agent", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def open_engines(names, globs, peer_files, data_dir, data_root, cores, bench_binary):
    """Engine objects in `names` order, plus the agent (or None) so it can be stopped.

    Peers get every table in `globs` ({table: Parquet glob}); `peer_files[table]` are its files."""
    import engines
    import pyarrow.parquet

    agent = None
    if "tessera" in names or "tessera-rpc" in names:
        if not agent_available(bench_binary):
            sys.exit(f"{bench_binary} has no working `agent` subcommand: build it, or leave tessera out of --engines")
        agent = engines.TesseraAgent(bench_binary, data_dir, TENANT, os.path.join(data_root, "agent.log"))
        if agent.cores is not None and int(agent.cores) != cores:
            print(f"warning: agent reports {agent.cores} cores, the driver sees {cores}", flush=True)
    schemas = {table: pyarrow.parquet.read_schema(files[0]) for table, files in peer_files.items()}
    opened = {}
    for name in names:
        if name in ("tessera", "tessera-rpc"):
            opened[name] = engines.Tessera(agent, name)
        elif name == "duckdb":
            opened[name] = engines.DuckDB(globs, cores)
        elif name == "datafusion":
            opened[name] = engines.DataFusion(globs, cores, False, schemas)
        elif name == "datafusion-pushdown":
            opened[name] = engines.DataFusion(globs, cores, True, schemas)
        elif name == "chdb":
            opened[name] = engines.ChDB(globs, cores)
        elif name == "polars":
            opened[name] = engines.Polars(globs, cores)
    return [opened[name] for name in names], agent


def check_agent_decimals(agent, engines_open):
    """Stop before measuring when the agent cannot return DECIMAL results (every lineitem query
    has one), rather than after every query before the first lineitem one has run."""
    import decimal

    try:
        _, rows = agent.run("tessera", f"SELECT MIN(l_quantity) FROM {LINEITEM}", False)
    except RuntimeError as error:
        fail(f"the Tessera agent cannot answer a DECIMAL result, which every {LINEITEM} query has:\n  {error}\n"
             "Give bench/src/agent.rs a JSON form for Decimal128 (engines.agent_value reads "
             '{"decimal": "123.45"}), or leave the lineitem queries out with --queries.', engines_open)
    if not isinstance(rows[0][0], decimal.Decimal):
        print(f"warning: the agent returns DECIMAL as {type(rows[0][0]).__name__}, not exact: Tessera's decimals "
              "are compared as floats (within 1e-6 relative)", flush=True)


def fail(message, engines_open):
    print("\nFAILED: " + message, file=sys.stderr, flush=True)
    for engine in engines_open:
        engine.close()
    sys.exit(2)


def measure(engine_list, agent, queries, args, globs, peer_files, tessera_files, reference):
    """All timed runs; returns (timings[qid][mode][engine] -> [ms], answer row counts, SQL texts)."""
    import check
    from queries import sql_for

    everything = engine_list + ([agent] if agent else [])
    timings, answer_rows, sql_texts = {}, {}, {}
    for query in queries:
        texts = {e.name: sql_for(query, e.name, args.rows, globs, args.lineitem_sf) for e in engine_list}
        files = peer_files[query.table]  # what a peer's cold run evicts
        sql_texts[query.id] = texts
        timings[query.id] = {mode: {e.name: [] for e in engine_list} for mode in MODES}
        reference_answer = None
        for mode in MODES:
            cold = mode == "cold"
            if not cold:
                for engine in engine_list:  # the unmeasured warm-up run
                    run_one(engine, texts[engine.name], False, files, tessera_files, everything)
            for repetition in range(args.runs):
                shift = repetition % len(engine_list)
                order = engine_list[shift:] + engine_list[:shift]
                answers = {}
                for engine in order:
                    ms, rows = run_one(engine, texts[engine.name], cold, files, tessera_files, everything)
                    timings[query.id][mode][engine.name].append(ms)
                    answers[engine.name] = check.normalize(rows)
                if reference_answer is None:
                    reference_answer = answers[reference]
                    answer_rows[query.id] = len(reference_answer)
                for engine in engine_list:
                    difference = check.first_difference(reference_answer, answers[engine.name], query.ordered)
                    if difference:
                        fail(
                            f"{query.id} ({query.name}), {mode} run {repetition + 1}: {engine.name} differs "
                            f"from {reference}\n  {reference} SQL: {texts[reference]}\n"
                            f"  {engine.name} SQL: {texts[engine.name]}\n{difference}",
                            everything,
                        )
            line = "  ".join(f"{name} {statistics.median(v):.1f}" for name, v in timings[query.id][mode].items())
            print(f"{query.id} {mode:4} ms (median of {args.runs}): {line}", flush=True)
    return timings, answer_rows, sql_texts


def run_one(engine, sql, cold, peer_files, tessera_files, everything):
    files = tessera_files if engine.name.startswith("tessera") else peer_files
    try:
        return engine.run(sql, cold, files)
    except Exception as error:  # any engine's error stops the run, loudly, with the SQL
        fail(f"{engine.name} ({'cold' if cold else 'warm'}) failed on:\n  {sql}\n  {type(error).__name__}: {error}", everything)


def summarize(timings, reference):
    medians, ratios = {}, {}
    for qid, modes in timings.items():
        medians[qid], ratios[qid] = {}, {}
        for mode, per_engine in modes.items():
            medians[qid][mode] = {name: statistics.median(v) for name, v in per_engine.items()}
            base = medians[qid][mode][reference]
            ratios[qid][mode] = {
                name: (m / base if base > 0 else None) for name, m in medians[qid][mode].items() if name != reference
            }
    return medians, ratios


def git(*words):
    done = subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip()


def main():
    args = parse_args()
    cores = len(os.sched_getaffinity(0))
    # Polars reads this once, at import: set before anything can import it (kept across re-exec).
    os.environ["POLARS_MAX_THREADS"] = str(cores)
    ensure_venv(args.venv)
    sys.path.insert(0, HERE)
    import physical
    import queries as query_set
    import report

    selected = query_set.select(args.queries)
    started = datetime.datetime.now()
    if not args.no_build:
        build()
    release = os.path.abspath(args.bin_dir) if args.bin_dir else os.path.join(REPO, "target", "release")
    tessera, bench_binary = os.path.join(release, "tessera"), os.path.join(release, "tessera-bench")
    for binary in (tessera, bench_binary):
        if not os.access(binary, os.X_OK):
            sys.exit(f"no executable {binary}" + ("" if args.bin_dir else ": build it, or run without --no-build"))
    data_root = os.path.abspath(args.dir)
    parquet_files, data_dir = prepare_data(tessera, data_root, args.rows)
    parquet_glob = os.path.join(os.path.dirname(parquet_files[0]), "*.parquet")
    globs, peer_files = {TABLE: parquet_glob}, {TABLE: parquet_files}
    if any(q.table == LINEITEM for q in selected):
        tpch_venv = os.path.abspath(args.tpch_venv or os.path.join(data_root, "tpch-venv"))
        lineitem_files = prepare_lineitem(tessera, data_root, data_dir, args.lineitem_sf, tpch_venv, cores)
        globs[LINEITEM] = os.path.join(os.path.dirname(lineitem_files[0]), "*.parquet")
        peer_files[LINEITEM] = lineitem_files
    tessera_files = files_under(data_dir)
    reference = "tessera" if "tessera" in args.engines else ("duckdb" if "duckdb" in args.engines else args.engines[0])
    print(f"== {len(selected)} queries x {args.engines} x {args.runs} runs, cold and warm; reference {reference}", flush=True)

    engine_list, agent = open_engines(args.engines, globs, peer_files, data_dir, data_root, cores, bench_binary)
    if agent and LINEITEM in globs:
        check_agent_decimals(agent, engine_list + [agent])
    versions = {engine.name: engine.version for engine in engine_list}
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    versions["tessera (git)"] = git("rev-parse", "--short", "HEAD") + dirty
    timings, answer_rows, sql_texts = measure(
        engine_list, agent, selected, args, globs, peer_files, tessera_files, reference
    )
    settings = {engine.name: engine.settings() for engine in engine_list}
    for engine in engine_list:
        engine.close()
    if agent:
        agent.close()  # before the jobs below: the agent and they both lock the data directory

    medians, ratios = summarize(timings, reference)
    results = {
        "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "command": "python3 bench/peers/run.py " + " ".join(sys.argv[1:]),
        "machine": physical.machine(data_root),
        "versions": versions,
        "settings": settings,
        "rows": args.rows,
        "runs": args.runs,
        "engines": args.engines,
        "reference": reference,
        "data": {
            "peers": parquet_layout(parquet_files),
            "tessera": tessera_layout(data_dir, TABLE),
        },
        "queries": [
            {"id": q.id, "name": q.name, "table": q.table, "spec": q.spec, "ordered": q.ordered, "sql": q.sql,
             "engine_sql": sql_texts[q.id]}
            for q in selected
        ],
        "answer_rows": answer_rows,
        "timings_ms": timings,
        "medians_ms": medians,
        "ratios": ratios,
    }
    if LINEITEM in peer_files:
        results["lineitem_sf"] = args.lineitem_sf
        results["data"][LINEITEM] = {
            "sf": args.lineitem_sf,
            "made_by": f"DuckDB dbgen ({', '.join(TPCH_PINS)}), COPY (FORMAT parquet, COMPRESSION snappy, "
            f"ROW_GROUP_SIZE {LINEITEM_ROW_GROUP_ROWS})",
            "peers": parquet_layout(peer_files[LINEITEM]),
            "tessera": dict(tessera_layout(data_dir, LINEITEM), import_options=" ".join(LINEITEM_IMPORT_OPTIONS)),
        }
    if not args.no_fio:
        print("== physical limits", flush=True)
        results["physical"] = physical.physical_limits(
            REPO, bench_binary, data_dir, args.rows, os.path.join(data_root, "rawio.dat"), cores
        )
        if "fio" in results["physical"] and results["physical"]["fio"].get("version"):
            versions["fio"] = results["physical"]["fio"]["version"]
    if not args.no_mix:
        print("== query mix", flush=True)
        # --quick shortens the mix from the job file's default; a full run uses the job file as it is.
        results["mix"] = physical.query_mix(REPO, bench_binary, data_dir, args.rows, QUICK_MIX_RUNTIME_S if args.quick else None)

    results_dir = os.path.join(REPO, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{results['date']}-{platform.node()}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print()
    print(report.text_tables(results))
    print(f"\nresults: {os.path.relpath(path, REPO)}")
    written = report.write_report(results, path)
    for item in written:
        print(f"wrote {os.path.relpath(item, REPO)}")


if __name__ == "__main__":
    main()
