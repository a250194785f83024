#!/usr/bin/env python3
"""bench/RESULTS.md and the charts, from one results file written by run.py.

    python3 bench/peers/report.py bench/results/<date>-<host>.json

Regenerating keeps any explanation already written under "Where Tessera is not ahead": each
item's paragraph sits between `<!-- why:ID -->` and `<!-- /why -->` and is carried over when it
no longer holds the placeholder. Sections measured by other scripts (streaming ingestion:
`ingest_vs_duckdb.py`) sit between `<!-- section:NAME -->` and `<!-- /section -->` and are
carried over whole.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS_MD = os.path.join(REPO, "bench", "RESULTS.md")
PLACEHOLDER = "**TODO (why):** placeholder — explanation to be written."
TESSERA_NAMES = ("tessera", "tessera-rpc")
PERCENTILES = ("50", "90", "99", "99.9")
MIB = 1024 * 1024
GIB = 1024 * MIB

COLD_MEANING = {
    "tessera": "the agent empties Tessera's buffer pool (decoded pages) and partial-result cache before the "
    "query and keeps its metadata cache (footers and page indexes, as a running node keeps them); Tessera "
    "reads with O_DIRECT, so the OS page cache never serves it (the driver evicts it anyway, as for everyone)",
    "tessera-rpc": "as tessera, through the loopback Cap'n Proto server",
    "duckdb": "a new in-memory database (empty object cache and external file cache); the view is created, "
    "then the Parquet files are evicted from the OS page cache",
    "datafusion": "a new SessionContext (new runtime: empty file-listing and metadata caches), the table "
    "registered with the schema given (no file read), then the Parquet files evicted",
    "datafusion-pushdown": "as datafusion",
    "chdb": "a new connection, and SYSTEM DROP of its process-wide caches (mark, uncompressed, query, query "
    "condition, filesystem, schema, format schema, Parquet metadata, page, mmap), then the Parquet files evicted",
    "polars": "a new SQLContext over a new scan_parquet, then the Parquet files evicted",
}


def cell(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def mode_rows(results, mode):
    """(header, rows) for one mode: reference median in ms, each other engine as 'ms (ratio x)'."""
    reference = results["reference"]
    others = [e for e in results["engines"] if e != reference]
    header = ["query", f"{reference} ms"] + [f"{e} ms (/{reference})" for e in others]
    rows = []
    for query in results["queries"]:
        medians = results["medians_ms"][query["id"]][mode]
        ratios = results["ratios"][query["id"]][mode]
        label = query["id"] + ("*" if query["spec"] else "") + " " + query["name"]
        row = [label, cell(medians[reference])]
        for engine in others:
            row.append(f"{cell(medians[engine])} ({cell(ratios[engine], 2)}x)")
        rows.append(row)
    return header, rows


def text_tables(results):
    lines = []
    for mode in ("cold", "warm"):
        header, rows = mode_rows(results, mode)
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines.append(f"{mode.upper()} medians, ms; (ratio engine/{results['reference']}: > 1 means "
                     f"{results['reference']} is faster); * = spec query")
        for row in [header] + rows:
            lines.append("  ".join(value.ljust(width) for value, width in zip(row, widths)))
        lines.append("")
    return "\n".join(lines).rstrip()


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def not_ahead(results):
    """(id, text) for every (query, mode, peer) where Tessera is not ahead, plus the DuckDB goal."""
    if results["reference"] != "tessera":
        return []
    items = []
    for query in results["queries"]:
        for mode in ("cold", "warm"):
            for engine, ratio in results["ratios"][query["id"]][mode].items():
                if engine in TESSERA_NAMES or ratio is None:
                    continue
                goal = query["id"] in ("q03", "q04") and mode == "warm" and engine == "duckdb"
                if ratio < 1 or (goal and ratio < 2):
                    why = "ratio < 1" if ratio < 1 else "goal: at least 2x DuckDB warm"
                    items.append((f"{query['id']}-{mode}-{engine}",
                                  f"**{query['id']} {query['name']}, {mode}, {engine}**: ratio {ratio:.2f} ({why})"))
    return items


def kept_sections():
    """Whole sections written by other scripts' runs, carried over by name."""
    if not os.path.exists(RESULTS_MD):
        return []
    text = open(RESULTS_MD).read()
    return re.findall(r"(<!-- section:\S+ -->\n.*?\n<!-- /section -->)", text, re.S)


def kept_explanations():
    if not os.path.exists(RESULTS_MD):
        return {}
    text = open(RESULTS_MD).read()
    kept = {}
    for key, body in re.findall(r"<!-- why:(\S+) -->\n(.*?)\n<!-- /why -->", text, re.S):
        if PLACEHOLDER not in body:
            kept[key] = body
    return kept


def size(n):
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def physical_section(results):
    physical = results.get("physical")
    if not physical:
        return ["Not run (`--no-fio`)."]
    lines = []
    for name in ("fio", "rawio", "scan"):
        part = physical.get(name, {})
        if "skipped" in part or "error" in part:
            lines.append(f"- {name}: {'skipped: ' + part['skipped'] if 'skipped' in part else 'error: ' + part['error']}")
    f = physical.get("fractions", {})
    if "fio_seq_bw_bytes_per_s" in f:
        lines.append(f"- fio sequential read (bench/jobs/fio-rawio-seq.fio): {size(f['fio_seq_bw_bytes_per_s'])}/s")
    if "tessera_rawio_seq_bw_bytes_per_s" in f:
        lines.append(f"- tessera-bench raw sequential read: {size(f['tessera_rawio_seq_bw_bytes_per_s'])}/s"
                     + (f" = **{f['rawio_over_fio']:.2f}** of fio" if "rawio_over_fio" in f else ""))
    if "scan_cold_bw_bytes_per_s" in f:
        lines.append(f"- cold full-column scan: {size(f['scan_cold_bw_bytes_per_s'])}/s"
                     + (f" = **{f['scan_cold_over_fio']:.2f}** of fio's sequential bandwidth" if "scan_cold_over_fio" in f else ""))
    if "scan_warm_per_core_bytes_per_s" in f:
        lines.append(f"- warm scan, decode+filter per core: {size(f['scan_warm_per_core_bytes_per_s'] or 0)}/s "
                     f"({f['scan_warm_per_core_source']}); memory read per core: {size(f['membw_per_core_bytes_per_s'] or 0)}/s "
                     f"({f['membw_per_core_source']})"
                     + (f" = **{f['scan_warm_over_membw']:.2f}** of memory bandwidth" if "scan_warm_over_membw" in f else ""))
    return lines or ["No numbers were produced."]


def mix_rows(results):
    mix = results.get("mix") or {}
    rows = []
    for job in (mix.get("json") or {}).get("jobs", []):
        classes = dict(job.get("classes") or {})
        classes.setdefault("(all)", {"ops": job.get("ops"), "lat_us": job.get("lat_us") or {}})
        for name, data in classes.items():
            percentiles = (data.get("lat_us") or {}).get("percentiles") or {}
            rows.append([job.get("jobname", "?"), name, str(data.get("ops", "-"))]
                        + [cell((percentiles.get(p) or 0) / 1000.0, 2) if p in percentiles else "-" for p in PERCENTILES])
    return rows


def mix_section(results):
    mix = results.get("mix")
    if mix is None:
        return ["Not run (`--no-mix`)."]
    if "skipped" in mix or "error" in mix:
        return [f"Not available: {mix.get('skipped') or mix.get('error')}"]
    lines = []
    for job in mix["json"].get("jobs", []):
        lines.append(f"- {job.get('jobname')}: {job.get('ops')} ops, {job.get('errors', 0)} errors, "
                     f"{cell(job.get('ops_per_s'))} ops/s over {cell(job.get('runtime_s'))} s"
                     + (f", error codes {job['error_codes']}" if job.get("error_codes") else ""))
    header = ["job", "class", "ops"] + [f"p{p} ms" for p in PERCENTILES]
    return lines + ["", markdown_table(header, mix_rows(results))]


def plain_log_axis(axes):
    """A log y axis labelled 0.5, 1, 2, 5, 10 rather than 5x10^-1 (other ticks unlabelled)."""
    from matplotlib.ticker import FuncFormatter

    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "125" else "")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)


def chart_ratios(results, mode, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [e for e in results["engines"] if e != results["reference"]]
    queries = [q["id"] for q in results["queries"]]
    width = 0.8 / max(1, len(peers))
    figure, axes = plt.subplots(figsize=(max(9, len(queries) * 1.0), 4.8))
    for index, peer in enumerate(peers):
        values = [results["ratios"][q][mode].get(peer) or float("nan") for q in queries]
        axes.bar([i + (index - (len(peers) - 1) / 2) * width for i in range(len(queries))], values, width, label=peer)
    axes.axhline(1.0, color="black", linewidth=1)
    plain_log_axis(axes)
    axes.set_xticks(range(len(queries)), queries)
    axes.set_ylabel(f"median ms / {results['reference']} median ms")
    axes.set_title(f"{mode}: engine / {results['reference']} (> 1: {results['reference']} faster), "
                   f"{results['rows']:,} rows, {results['machine']['cores']} cores")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chart_mix(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in mix_rows(results) if r[1] != "(all)"] or mix_rows(results)
    labels = [f"{r[0]}\n{r[1]}" for r in rows]
    width = 0.8 / len(PERCENTILES)
    figure, axes = plt.subplots(figsize=(max(8, len(rows) * 1.2), 4.8))
    for index, p in enumerate(PERCENTILES):
        values = [float(r[3 + index]) if r[3 + index] != "-" else float("nan") for r in rows]
        axes.bar([i + (index - (len(PERCENTILES) - 1) / 2) * width for i in range(len(rows))], values, width, label=f"p{p}")
    plain_log_axis(axes)
    axes.set_xticks(range(len(rows)), labels, fontsize="small")
    axes.set_ylabel("latency, ms")
    axes.set_title("query mix: latency percentiles per query class")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def charts(results, results_path):
    stem = os.path.splitext(results_path)[0]
    made = {}
    try:
        made["warm"] = stem + "-ratios.png"
        chart_ratios(results, "warm", made["warm"])
        made["cold"] = stem + "-cold-ratios.png"
        chart_ratios(results, "cold", made["cold"])
        if mix_rows(results):
            made["mix"] = stem + "-mix-latency.png"
            chart_mix(results, made["mix"])
    except ImportError as error:
        print(f"no charts: {error}", file=sys.stderr)
        made = {}
    return made


def write_report(results, results_path):
    made = charts(results, results_path)
    kept = kept_explanations()
    m, v = results["machine"], results["versions"]
    rel = lambda p: os.path.relpath(p, os.path.dirname(RESULTS_MD))  # noqa: E731
    out = ["# Tessera against its peers", "",
           f"Generated from `{os.path.relpath(results_path, REPO)}` (run started {results['started']}). "
           f"Regenerate this file with `python3 bench/peers/report.py {os.path.relpath(results_path, REPO)}`.", "",
           "## How to reproduce", "", "```", results["command"], "```", "",
           "(The full run is `python3 bench/peers/run.py --rows 20000000 --runs 5`; `--quick` is a smoke test.) "
           f"Each query runs {results['runs']} times per engine cold and {results['runs']} times warm (after one "
           "unmeasured warm-up), interleaved: per query and mode, each repetition runs every engine once, in an "
           "order rotated every repetition. Numbers are medians. Every answer was checked against "
           f"`{results['reference']}` (multiset, or sequence with ORDER BY; floats within 1e-6 relative; "
           "decimals exactly, see bench/peers/check.py).", "",
           "## Machine", "",
           f"- {m['cpu_model']}, {m['cores']} cores used by every engine, {size(m['memory_bytes'])} memory",
           f"- Linux {m['kernel']}; {size(m['disk_free_bytes'])} free of {size(m['disk_total_bytes'])} on the data disk", "",
           "## Versions", ""]
    out += [f"- {name}: {version}" for name, version in v.items()]
    data = results["data"]
    peers = data["peers"]
    rows_per_file = ", ".join(f"{n:,}" for n in sorted(set(peers.get("rows_per_file", [])), reverse=True)) or "?"
    out += ["", "## Data", "",
            f"`events`, {results['rows']:,} rows, made by `tessera gen events` (numbered Parquet files, zone-less "
            "µs timestamps, sorted by time).", "",
            f"- Peers read the generator's Parquet files (`{os.path.dirname(peers['files'][0])}/*.parquet`): "
            f"{len(peers['files'])} file(s), {size(peers['bytes'])}, rows per file {rows_per_file}, "
            f"{peers.get('row_groups', '?')} row group(s) of at most {peers.get('max_rows_per_row_group', 0):,} rows, "
            f"{peers.get('compression', '?')}.",
            f"- Tessera reads its own table, imported from the same files with `tessera import` (its partitioned "
            f"layout, by the date of `timestamp`): {data['tessera']['files']} files, {size(data['tessera']['bytes'])} "
            f"in `{data['tessera']['dir']}`.", ""]
    lineitem = data.get("lineitem")
    if lineitem:
        lp, lt = lineitem["peers"], lineitem["tessera"]
        out += [f"`lineitem`, TPC-H at scale factor {lineitem['sf']:g}, {sum(lp['rows_per_file']):,} rows, made by "
                f"{lineitem['made_by']}: DECIMAL(15,2) money, DATE columns, strings, BIGINT keys, rows in dbgen's "
                "order (by `l_orderkey`). Queries on it are marked `lineitem:`.", "",
                f"- Peers read DuckDB's file as it was written (`{lp['files'][0]}`): {size(lp['bytes'])}, "
                f"{lp.get('row_groups', '?')} row group(s) of at most {lp.get('max_rows_per_row_group', 0):,} rows, "
                f"{lp.get('compression', '?')}.",
                f"- Tessera reads table `lineitem`, imported from that file into the same data directory with "
                f"`tessera import {lt.get('import_options', '')}` and no time column (not partitioned): "
                f"{lt['files']} files, {size(lt['bytes'])}, {lt.get('row_groups', '?')} row group(s) of at most "
                f"{lt.get('max_rows_per_row_group', 0):,} rows.", ""]
    out += ["Engine settings:", ""]
    out += [f"- {e}: " + ", ".join(f"{k}={v}" for k, v in s.items()) for e, s in results["settings"].items()]
    out += ["",
            "## What cold means", "",
            "Before every cold run the driver evicts that engine's input files from the OS page cache "
            "(`posix_fadvise(POSIX_FADV_DONTNEED)` on every file, then `sync; echo 1 > /proc/sys/vm/drop_caches` "
            "when writable), after the engine's fresh connection is set up (setup is not timed):", ""]
    out += [f"- {e}: {COLD_MEANING[e]}" for e in results["engines"]]
    out += ["", "Warm runs use one long-lived connection/context per engine. The timed span for a peer is from "
            "submitting the SQL until the whole result is an Arrow table (Polars: a DataFrame) in memory; Tessera's "
            "is measured by the agent over the same span. Warm Tessera is served by its buffer pool (decoded pages) "
            "and its partial-result cache: a repeated aggregation over unchanged files merges its cached per-file "
            "parts (about 1 ms here); groupings of more than 4,096 groups (q10, q15, q18) and ORDER BY scans are "
            "computed again from pooled pages. The peers keep what they keep across queries on one connection.", ""]
    for mode in ("cold", "warm"):
        header, rows = mode_rows(results, mode)
        out += [f"## Medians, {mode} (ms; in brackets engine / {results['reference']}, > 1 means "
                f"{results['reference']} is faster; * = spec query)", "", markdown_table(header, rows), ""]
        if mode in made:
            out += [f"![{mode} ratios]({rel(made[mode])})", ""]
    out += ["## Physical limits", ""] + physical_section(results) + [""]
    out += ["## Query mix", ""] + mix_section(results) + [""]
    if "mix" in made:
        out += [f"![query mix latency]({rel(made['mix'])})", ""]
    for section in kept_sections():
        out += [section, ""]
    out += ["## Where Tessera is not ahead, and why", ""]
    items = not_ahead(results)
    if results["reference"] != "tessera":
        out += ["Tessera was not in this run."]
    elif not items:
        out += ["Nowhere in this run."]
    for key, text in items:
        out += [f"- {text}", "", f"<!-- why:{key} -->", kept.get(key, PLACEHOLDER), "<!-- /why -->", ""]
    with open(RESULTS_MD, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")
    return [RESULTS_MD] + list(made.values())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        venv = os.path.join(REPO, "bench", ".venv")
        venv_python = os.path.join(venv, "bin", "python")
        if os.path.exists(venv_python) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
            os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])
    import json

    with open(sys.argv[1]) as f:
        results = json.load(f)
    for path in write_report(results, os.path.abspath(sys.argv[1])):
        print(f"wrote {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
