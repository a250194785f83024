"""Engines under test: the Tessera agent (embedded and RPC) and the peers, behind one small API.

Every engine object has `run(sql, cold, files) -> (ms, rows)`, `version` and `close()`. A peer
is opened on `tables`, {table name: Parquet glob} (`events`, and `lineitem` when a selected query
reads it), and registers every table under its name (chDB reads `file('glob', Parquet)` in the
SQL instead, see queries.py).
- Warm runs use one long-lived connection/context per engine, opened at start-up; the driver
  does one unmeasured warm-up run per query before the measured warm runs.
- Cold runs (peers) use a fresh connection/context that is opened, has its table registered,
  and only then has the OS page cache evicted for its input files (see `evict_page_cache`), so
  registration is not timed and nothing it read stays cached in the OS. DataFusion gets the
  schema passed in, so registering it reads no file. chDB's caches are process-wide, so its
  cold runs also drop them with SYSTEM DROP ... CACHE.
- Tessera cold runs send `cold: true`: the agent empties its buffer pool and partial-result
  cache and keeps its metadata cache (footers, page indexes), as a running node does (it reads
  with O_DIRECT, so the OS page cache never serves it).
The timed span for a peer is from handing over the SQL until the whole result is an Arrow table
(or Polars DataFrame) in memory; converting it to Python rows for the answer check is not timed.
Tessera's `ms` is measured by the agent over the same span.

This module imports no engine at load time: each is imported when first opened, after the
driver has set POLARS_MAX_THREADS.
"""

import decimal
import json
import os
import subprocess
import time

# chDB keeps these caches in its process-wide ClickHouse context, not per connection.
CHDB_CACHES = (
    "MARK CACHE",
    "UNCOMPRESSED CACHE",
    "QUERY CACHE",
    "QUERY CONDITION CACHE",
    "FILESYSTEM CACHE",
    "SCHEMA CACHE",
    "FORMAT SCHEMA CACHE",
    "PARQUET METADATA CACHE",
    "PAGE CACHE",
    "MMAP CACHE",
)


def evict_page_cache(files):
    """Drop `files` from the OS page cache, then all clean pages when /proc allows it (root).

    Returns "fadvise+drop_caches" or "fadvise" so the results can say what was done."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return "fadvise+drop_caches"
    except OSError:
        return "fadvise"


def arrow_rows(table):
    """An Arrow table as a list of row lists (column order kept)."""
    columns = [column.to_pylist() for column in table.columns]
    return [list(row) for row in zip(*columns)] if columns else []


class DuckDB:
    def __init__(self, tables, cores):
        import duckdb

        self.name = "duckdb"
        self.tables = tables
        self.cores = cores
        self.duckdb = duckdb
        self.version = duckdb.__version__
        self.warm = self._connect()

    def _connect(self):
        connection = self.duckdb.connect(":memory:")
        connection.execute(f"SET threads = {self.cores}")
        for table, glob in self.tables.items():
            connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}')")
        return connection

    def settings(self):
        names = ("threads", "parquet_metadata_cache", "enable_object_cache", "enable_external_file_cache")
        found = {}
        for name in names:
            try:
                found[name] = str(self.warm.execute(f"SELECT current_setting('{name}')").fetchone()[0])
            except self.duckdb.Error:
                pass
        return found

    def run(self, sql, cold, files):
        connection = self._connect() if cold else self.warm
        if cold:
            evict_page_cache(files)
        started = time.perf_counter()
        table = connection.sql(sql).to_arrow_table()
        ms = (time.perf_counter() - started) * 1000.0
        if cold:
            connection.close()
        return ms, arrow_rows(table)

    def close(self):
        self.warm.close()


class DataFusion:
    def __init__(self, tables, cores, pushdown, schemas):
        import datafusion

        self.name = "datafusion-pushdown" if pushdown else "datafusion"
        self.datafusion = datafusion
        self.directories = {table: os.path.dirname(glob) for table, glob in tables.items()}
        self.cores = cores
        self.pushdown = pushdown
        self.schemas = schemas
        self.version = datafusion.__version__
        self.warm = self._connect()

    def _connect(self):
        config = (
            self.datafusion.SessionConfig()
            .with_target_partitions(self.cores)
            .set("datafusion.execution.parquet.pushdown_filters", "true" if self.pushdown else "false")
        )
        context = self.datafusion.SessionContext(config)
        # The schema is given, so registering lists the directory but reads no file footer.
        for table, directory in self.directories.items():
            context.register_parquet(table, directory, schema=self.schemas[table])
        return context

    def settings(self):
        return {
            "target_partitions": str(self.cores),
            "datafusion.execution.parquet.pushdown_filters": str(self.pushdown).lower(),
        }

    def run(self, sql, cold, files):
        context = self._connect() if cold else self.warm
        if cold:
            evict_page_cache(files)
        started = time.perf_counter()
        table = context.sql(sql).to_arrow_table()
        ms = (time.perf_counter() - started) * 1000.0
        return ms, arrow_rows(table)

    def close(self):
        self.warm = None


class ChDB:
    def __init__(self, tables, cores):
        import chdb

        self.name = "chdb"
        self.chdb = chdb
        self.cores = cores
        self.version = f"{chdb.__version__} (ClickHouse {chdb.engine_version})"
        self.warm = chdb.connect(":memory:")
        self.suffix = f" SETTINGS max_threads = {cores}, session_timezone = 'UTC'"
        self.dropped = []

    def settings(self):
        return {"max_threads": str(self.cores), "session_timezone": "UTC", "dropped_caches": self.dropped}

    def run(self, sql, cold, files):
        connection = self.chdb.connect(":memory:") if cold else self.warm
        if cold:
            self.dropped = []
            for cache in CHDB_CACHES:
                try:
                    connection.query(f"SYSTEM DROP {cache}")
                    self.dropped.append(cache)
                except Exception:  # chDB raises its own error type; a missing cache kind is fine
                    pass
            evict_page_cache(files)
        started = time.perf_counter()
        table = connection.query(sql + self.suffix, "ArrowTable")
        ms = (time.perf_counter() - started) * 1000.0
        if cold:
            connection.close()
        return ms, arrow_rows(table)

    def close(self):
        self.warm.close()


class Polars:
    def __init__(self, tables, cores):
        # POLARS_MAX_THREADS is read once, when polars is first imported.
        if os.environ.get("POLARS_MAX_THREADS") != str(cores):
            raise RuntimeError("POLARS_MAX_THREADS must be set to the core count before polars is imported")
        import polars

        self.name = "polars"
        self.polars = polars
        self.tables = tables
        self.version = polars.__version__
        if polars.thread_pool_size() != cores:
            raise RuntimeError(f"polars uses {polars.thread_pool_size()} threads, expected {cores}")
        self.warm = self._connect()

    def _connect(self):
        return self.polars.SQLContext({table: self.polars.scan_parquet(glob) for table, glob in self.tables.items()})

    def settings(self):
        return {"POLARS_MAX_THREADS": os.environ["POLARS_MAX_THREADS"], "interface": "SQLContext over scan_parquet"}

    def run(self, sql, cold, files):
        context = self._connect() if cold else self.warm
        if cold:
            evict_page_cache(files)
        started = time.perf_counter()
        frame = context.execute(sql).collect()
        ms = (time.perf_counter() - started) * 1000.0
        return ms, arrow_rows(frame.to_arrow())

    def close(self):
        self.warm = None


class TesseraAgent:
    """The `tessera-bench agent` subprocess, shared by the `tessera` and `tessera-rpc` engines."""

    def __init__(self, binary, data_dir, tenant, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        command = [binary, "agent", "--data", data_dir, "--tenant", tenant, "--rpc"]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.next_id = 1
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"agent's first line is not ready: {ready}")
        self.cores = ready.get("cores")
        self.version = ready.get("version", "?")

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise RuntimeError(
                f"tessera-bench agent exited (code {self.process.returncode}); "
                f"last lines of {self.log_path}:\n{tail(self.log_path)}"
            )
        try:
            return json.loads(line)
        except json.JSONDecodeError as error:
            raise RuntimeError(f"agent wrote a line that is not JSON ({error}): {line[:300]!r}")

    def run(self, engine, sql, cold):
        request = {"id": self.next_id, "engine": engine, "sql": sql, "cold": cold}
        self.next_id += 1
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        if reply.get("id") != request["id"]:
            raise RuntimeError(f"agent replied to id {reply.get('id')}, expected {request['id']}")
        if reply.get("error") is not None:
            raise RuntimeError(f"{engine} failed on {sql!r}: {reply['error']}")
        return float(reply["ms"]), [[agent_value(v) for v in row] for row in reply["rows"]]

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


class Tessera:
    """`tessera` (embedded) or `tessera-rpc` (loopback Cap'n Proto): one engine of the agent."""

    def __init__(self, agent, name):
        self.agent = agent
        self.name = name
        self.version = agent.version

    def settings(self):
        return {"cores (agent)": str(self.agent.cores)}

    def run(self, sql, cold, files):
        if cold:
            # Tessera reads with O_DIRECT; evicting too keeps every engine's cold step the same.
            evict_page_cache(files)
        return self.agent.run(self.name, sql, cold)

    def close(self):
        pass


def agent_value(value):
    """A value of the agent's JSON as Python: `{"decimal": "123.45"}` (a DECIMAL, exact) -> Decimal.

    The agent of this writing has no JSON form for DECIMAL results (it answers "result type
    Decimal128(15, 2) has no JSON form here"); this is the form asked of it, so exact decimals
    stay exact (a JSON number would be read as a double). Plain numbers are taken as they are."""
    if isinstance(value, dict) and set(value) == {"decimal"}:
        return decimal.Decimal(value["decimal"])
    return value


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"
