#!/usr/bin/env python3
"""End-to-end test of the Python client (tessera_client.py) against a real `tessera serve`.

Plain script, no pytest: ``python3 test_client.py``; exits 0 if every check passed, 1 if one
failed, 2 if the environment is not usable (no binary). Environment:

* ``TESSERA_BIN``: the tessera binary (default ``target/release/tessera`` under the repo root)
* ``TESSERA_TEST_ROWS``: rows of the generated events table (default 200000)
* ``KEEP_TMP=1``: keep the temporary directory (data, secrets, server log) for inspection

What it does: generates the events data set, imports it embedded for tenant ``acme`` (table
``events``) and a small table ``secrets`` for tenant ``globex``, asks the embedded engine
(``tessera sql --data``) for the expected answers, starts ``tessera serve`` on free ports, mints
tokens with ``tessera token`` and runs the checks over RPC with the Python client. The server is
always terminated at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE))

import capnp  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import tessera_client as tc  # noqa: E402

TESSERA_BIN = Path(os.environ.get("TESSERA_BIN", REPO_ROOT / "target" / "release" / "tessera"))
if not TESSERA_BIN.is_absolute():
    TESSERA_BIN = (REPO_ROOT / TESSERA_BIN).resolve()
ROWS = int(os.environ.get("TESSERA_TEST_ROWS", "200000"))
IMPORT_ROWS = 1000
IMPORT_ID_OFFSET = 1_000_000_000  # ids of imported rows, clear of the generated ones
HEALTH_TIMEOUT_S = 30
CHECK_TIMEOUT_S = 120
REL_TOL = 1e-9

ORACLE_QUERIES = {
    "count": "SELECT COUNT(*) FROM events",
    "group_by": "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category",
    "point_lookup": "SELECT * FROM events WHERE id = 4242",
}


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def run(*args: str) -> str:
    """Runs the tessera binary; returns stdout, raises with stderr on failure."""
    cmd = [str(TESSERA_BIN), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all bound at once, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Server:
    """A `tessera serve` child process, its log in a file."""

    def __init__(self, data: Path, secret: Path, log: Path):
        self.rpc_port, self.http_port = free_ports(2)
        self.addr = f"127.0.0.1:{self.rpc_port}"
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(TESSERA_BIN), "serve", "--data", str(data),
             "--listen", self.addr, "--http", f"127.0.0.1:{self.http_port}",
             "--jwt-secret-file", str(secret), "--cores", "2"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/health"
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    health = json.loads(response.read())
                if health.get("status") == "ok":
                    return health
                last = health
            except Exception as exc:  # not listening yet
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"no healthy /health within {timeout} s (last: {last}):\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


# --------------------------------------------------------------------------------------------
# Comparing results with the oracle
# --------------------------------------------------------------------------------------------


def _as_naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def same_value(got, expected) -> bool:
    """One RPC value (from pyarrow) against one oracle value (from JSON)."""
    if got is None or expected is None:
        return got is None and expected is None
    if isinstance(got, dt.datetime):
        # The oracle prints timestamps as ISO 8601 text (UTC).
        return _as_naive_utc(got) == _as_naive_utc(
            dt.datetime.fromisoformat(str(expected).replace("Z", "+00:00")))
    if isinstance(got, dt.date):
        return got == dt.date.fromisoformat(str(expected))
    if isinstance(got, bool) or isinstance(expected, bool):
        return got == expected
    if isinstance(got, float) or isinstance(expected, float):
        return math.isclose(float(got), float(expected), rel_tol=REL_TOL, abs_tol=0.0)
    return got == expected


def assert_same_rows(got: pa.Table, expected: list[dict]) -> None:
    rows = got.to_pylist()
    assert len(rows) == len(expected), f"{len(rows)} rows, oracle has {len(expected)}"
    if expected:
        assert list(rows[0]) == list(expected[0]), \
            f"columns {list(rows[0])}, oracle has {list(expected[0])}"
    for i, (row, want) in enumerate(zip(rows, expected)):
        for name in want:
            assert same_value(row[name], want[name]), \
                f"row {i} column {name}: got {row[name]!r}, oracle {want[name]!r}"


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


class Report:
    def __init__(self):
        self.results: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""),
              flush=True)

    async def check(self, name: str, body) -> None:
        """Runs one check (a coroutine function returning an optional detail string)."""
        try:
            detail = await asyncio.wait_for(body(), CHECK_TIMEOUT_S)
            self.add(name, True, detail or "")
        except Exception as exc:
            tb = traceback.format_exc(limit=3) if not isinstance(exc, AssertionError) else ""
            self.add(name, False, f"{type(exc).__name__}: {exc}" + (f"\n{tb}" if tb else ""))

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.results if not ok)


async def expect_error(awaitable, needle: str) -> str:
    """Awaits a call that must fail with an error whose text contains `needle`."""
    try:
        result = await awaitable
    except tc.TesseraError as exc:
        assert needle in exc.description, f"error {exc.description!r} lacks {needle!r}"
        return exc.description
    raise AssertionError(f"expected an error containing {needle!r}, got {result!r}")


async def run_checks(report: Report, server: Server, tokens: dict, oracle: dict,
                     import_rows: pa.Table) -> None:
    conn = await tc.connect(server.addr)
    try:
        state = {}

        async def version():
            protocol, software = await tc.version(conn.gateway)
            assert protocol == 1, f"protocol {protocol}"
            return f"protocol {protocol}, server {software}"

        async def login_reader():
            tenant, role = await tc.login(conn.gateway, tokens["reader"])
            assert role == "reader", f"role {role}"
            me = await tc.whoami(tenant)
            assert me["tenant"] == "acme" and me["role"] == "reader", me
            state["reader"] = tenant
            return f"tenant {me['tenant']}, role {me['role']}"

        def oracle_check(key):
            async def body():
                table = await tc.query(state["reader"], ORACLE_QUERIES[key])
                assert_same_rows(table, oracle[key])
                return f"{table.num_rows} row(s) as the embedded engine"
            return body

        async def full_scan():
            table, stats = await tc.query_with_stats(state["reader"], "SELECT * FROM events")
            assert table.num_rows == ROWS, f"{table.num_rows} rows, expected {ROWS}"
            assert stats["rowsReturned"] == ROWS, f"stats.rowsReturned {stats['rowsReturned']}"
            distinct = pc.count_distinct(table["id"]).as_py()
            assert distinct == ROWS, f"{distinct} distinct ids"
            return (f"{table.num_rows} rows in {stats['batches']} batches, "
                    f"{stats['ipcBytes']} IPC bytes")

        async def wrong_secret():
            return await expect_error(tc.login(conn.gateway, tokens["wrong_secret"]),
                                      "unauthenticated")

        async def garbage_token():
            return await expect_error(tc.login(conn.gateway, "not.a-jwt"), "unauthenticated")

        async def other_tenants_table():
            return await expect_error(tc.query(state["reader"], "SELECT COUNT(*) FROM secrets"),
                                      "not_found")

        async def only_own_tables():
            names = sorted(t["name"] for t in await tc.tables(state["reader"]))
            assert names == ["events"], f"tables {names}"
            return f"tables {names}"

        async def reader_cannot_import():
            return await expect_error(
                tc.import_table(state["reader"], "events", import_rows), "permission")

        async def admin_imports():
            admin, role = await tc.login(conn.gateway, tokens["admin"])
            assert role == "admin", f"role {role}"
            count = "SELECT COUNT(*) AS n FROM events"
            before = (await tc.query(admin, count))["n"][0].as_py()
            committed = await tc.import_table(admin, "events", import_rows)
            assert committed["rows"] == import_rows.num_rows, f"commit {committed}"
            after = (await tc.query(admin, count))["n"][0].as_py()
            assert after == before + import_rows.num_rows, \
                f"count {before} -> {after}, imported {import_rows.num_rows}"
            # The reader's capability sees the new rows too, and they are the imported ones.
            mine = (await tc.query(
                state["reader"],
                f"SELECT COUNT(*) AS n FROM events WHERE id >= {IMPORT_ID_OFFSET}"))["n"][0]
            assert mine.as_py() == import_rows.num_rows, f"{mine} rows with imported ids"
            return f"count {before} -> {after}, commit {committed}"

        async def bad_sql():
            first = await expect_error(tc.query(state["reader"], "SELEC * FRM events"), "sql:")
            await expect_error(tc.query(state["reader"], "SELECT no_such_column FROM events"),
                               "sql:")
            return first

        await report.check("gateway version (no token)", version)
        await report.check("login with a reader token", login_reader)
        if "reader" not in state:
            return
        await report.check("COUNT(*) matches the oracle", oracle_check("count"))
        await report.check("GROUP BY category SUM(amount) matches the oracle",
                           oracle_check("group_by"))
        await report.check("point lookup id = 4242 matches the oracle",
                           oracle_check("point_lookup"))
        await report.check("SELECT * streams every row", full_scan)
        await report.check("wrong-secret token refused (unauthenticated)", wrong_secret)
        await report.check("garbage token refused (unauthenticated)", garbage_token)
        await report.check("acme cannot see globex's table (not_found)", other_tenants_table)
        await report.check("tables() lists only acme's tables", only_own_tables)
        await report.check("reader cannot import (permission)", reader_cannot_import)
        await report.check("admin imports; count grows by exactly the rows imported",
                           admin_imports)
        await report.check("bad SQL refused (sql:)", bad_sql)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Setup and main
# --------------------------------------------------------------------------------------------


def setup(tmp: Path) -> tuple[Path, Path, Path, dict, pa.Table]:
    """Data directory, secret files, oracle answers and the rows to import."""
    data = tmp / "data"
    events = tmp / "events.parquet"
    run("gen", "events", "--rows", str(ROWS), "--out", str(events))
    run("import", "--data", str(data), "--tenant", "acme", "--table", "events", str(events))

    secrets = tmp / "secrets.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "created": pa.array([dt.datetime(2024, 1, 1, 12)] * 3, pa.timestamp("us")),
        "secret": ["globex-alpha", "globex-beta", "globex-gamma"],
    }), secrets)
    run("import", "--data", str(data), "--tenant", "globex", "--table", "secrets", str(secrets))

    secret = tmp / "jwt-secret"
    secret.write_text(os.urandom(20).hex())  # 40 bytes
    wrong = tmp / "wrong-secret"
    wrong.write_text(os.urandom(20).hex())

    oracle = {key: json.loads(run("sql", "--data", str(data), "--tenant", "acme",
                                  "--format", "json", sql))
              for key, sql in ORACLE_QUERIES.items()}

    # Rows to import: the generated table's schema and values, ids moved out of the way.
    rows = pq.read_table(events).slice(0, IMPORT_ROWS)
    rows = rows.set_column(0, rows.field(0), pc.add(rows["id"], IMPORT_ID_OFFSET))
    return data, secret, wrong, oracle, rows


def main() -> int:
    if not TESSERA_BIN.is_file():
        print(f"no tessera binary at {TESSERA_BIN}; build it with "
              "`cargo build --release -p tessera-tools` or set TESSERA_BIN", file=sys.stderr)
        return 2
    print(f"tessera binary: {TESSERA_BIN}")
    print(f"pycapnp {capnp.__version__}, pyarrow {pa.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="tessera-pyclient-"))
    report = Report()
    server = None
    try:
        started = time.monotonic()
        data, secret, wrong, oracle, import_rows = setup(tmp)
        report.add("setup: generate, import, oracle", True,
                   f"{ROWS} events rows, {time.monotonic() - started:.1f} s")
        server = Server(data, secret, tmp / "serve.log")
        health = server.wait_healthy()
        report.add("server healthy", True, f"{server.addr}, {health.get('cores')} cores")

        def token(role, secret_file=secret):
            return run("token", "--secret-file", str(secret_file), "--tenant", "acme",
                       "--role", role, "--ttl", "1h").strip()

        tokens = {"reader": token("reader"), "admin": token("admin"),
                  "wrong_secret": token("admin", wrong)}
        asyncio.run(capnp.run(run_checks(report, server, tokens, oracle, import_rows)))
    except Exception as exc:
        report.add("setup / harness", False, f"{type(exc).__name__}: {exc}")
    finally:
        if server is not None:
            server.stop()
            if server.proc.returncode not in (0, -signal.SIGTERM):
                report.add("server exits cleanly on SIGTERM", False,
                           f"exit status {server.proc.returncode}")
            if report.failed:
                print("--- server log ---\n" + server.log()[-4000:] + "\n---")
        if os.environ.get("KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    total = len(report.results)
    print(f"\n{total - report.failed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
