#!/usr/bin/env python3
"""A small Python client for Tessera's Cap'n Proto RPC protocol.

It is written against the protocol file, ``schema/tessera.capnp``, and nothing else: the schema is
the contract, this client is one implementation of it (the Rust client in ``rpc/src/client.rs`` is
another).

What it does, in protocol terms:

* ``connect(addr)`` opens a two-party Cap'n Proto connection and takes the bootstrap capability,
  a ``Gateway``.
* ``login(gateway, token)`` calls ``Gateway.login`` and gets back a ``Tenant`` capability, bound
  by the server to the tenant and role in the token's claims. No later call names a tenant.
* ``query(tenant, sql)`` calls ``Tenant.query`` with a ``BatchSink`` capability served by this
  process. The server pushes Arrow IPC bytes into it (``push``), then calls ``done``; the
  concatenation of the pushes is one Arrow IPC stream, decoded here with ``pyarrow.ipc``.
* ``import_table(tenant, name, table)`` calls ``Tenant.importBatches`` and writes the table as one
  Arrow IPC stream, about 1 MiB of whole IPC messages per ``ImportStream.write``, then ``commit``.
* ``tables(tenant)`` calls ``Tenant.tables``.

Every failed call is a Cap'n Proto exception whose description starts with a stable code and a
colon (``unauthenticated: token expired``); this module raises those as ``TesseraError`` with the
code parsed out.

pycapnp 2.x is asyncio based: every function here is a coroutine and must run inside the KJ event
loop, e.g. ``asyncio.run(capnp.run(main()))`` or ``async with capnp.kj_loop(): ...``.

Command line::

    python3 tessera_client.py --addr 127.0.0.1:7070 --token "$TOKEN" "SELECT COUNT(*) FROM events"
    python3 tessera_client.py --addr 127.0.0.1:7070 --token "$TOKEN" --tables
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import capnp
import pyarrow as pa
import pyarrow.ipc

# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parents[3]

#: ``tessera.capnp``; override with the environment variable ``TESSERA_SCHEMA``.
SCHEMA_PATH = Path(os.environ.get("TESSERA_SCHEMA", _REPO_ROOT / "schema" / "tessera.capnp"))


def _import_dirs() -> list[str]:
    """Directories searched for ``import "/capnp/stream.capnp"``.

    The repository keeps a copy under ``schema/include``; pycapnp also ships the standard
    ``capnp/*.capnp`` files in its package, whose parent directory works as a fallback. Both
    declare the same file id, so whichever is found first is the same schema.
    """
    dirs = [SCHEMA_PATH.parent / "include", Path(capnp.__file__).resolve().parent.parent]
    return [str(d) for d in dirs if (d / "capnp" / "stream.capnp").is_file()]


schema = capnp.load(str(SCHEMA_PATH), imports=_import_dirs())

#: Arrow IPC bytes per ``ImportStream.write`` (a write may exceed it by one record batch).
WRITE_CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

#: The error codes the schema defines (see the header of tessera.capnp).
ERROR_CODES = (
    "unauthenticated", "permission", "sql", "not_found", "invalid", "overloaded", "limit",
    "cancelled", "corrupt", "io", "internal",
)
_CODE_RE = re.compile(r"\b(" + "|".join(ERROR_CODES) + r"): ")


class TesseraError(Exception):
    """A failed call. ``code`` is the schema's error code (``"unknown"`` when the description
    carries none, e.g. a dropped connection); ``str()`` is ``"code: message"``."""

    def __init__(self, code: str, message: str, description: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.description = description  # the whole exception text, as received

    @classmethod
    def from_kj(cls, exc: capnp.KjException) -> "TesseraError":
        description = exc.description or str(exc)
        # Cap'n Proto may prefix the server's text (e.g. "remote exception: "); the code is the
        # first "<code>: " in it.
        match = _CODE_RE.search(description)
        if match is None:
            return cls("unknown", description, description)
        return cls(match.group(1), description[match.end():], description)


async def _call(promise):
    """Awaits a capability call, turning a Cap'n Proto exception into a ``TesseraError``."""
    try:
        return await promise
    except capnp.KjException as exc:
        raise TesseraError.from_kj(exc) from None


# --------------------------------------------------------------------------------------------
# Connection and login
# --------------------------------------------------------------------------------------------


@dataclass
class Connection:
    """One RPC connection. ``gateway`` is its bootstrap capability."""

    client: capnp.TwoPartyClient
    gateway: object  # schema.Gateway client

    def close(self) -> None:
        self.client.close()


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def connect(addr: str) -> Connection:
    """Connects to a Tessera node at ``HOST:PORT`` and returns the connection; its ``gateway``
    needs no token for ``version()`` and takes one in ``login``."""
    host, port = _split_addr(addr)
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=port)
    client = capnp.TwoPartyClient(stream)
    gateway = client.bootstrap().cast_as(schema.Gateway)
    return Connection(client, gateway)


async def login(gateway, token: str):
    """Presents a token; returns ``(tenant capability, role name)``.

    Raises ``TesseraError`` with code ``unauthenticated`` for a token the server does not accept
    (bad signature, expired, garbage) and ``permission`` for an operator token.
    """
    response = await _call(gateway.login(token=token))
    return response.tenant, str(response.role)


async def version(gateway) -> tuple[int, str]:
    """(protocol version, server software version); needs no token."""
    response = await _call(gateway.version())
    return response.protocol, response.server


async def whoami(tenant) -> dict:
    """What the capability is bound to: tenant, role and token expiry (Unix seconds)."""
    response = await _call(tenant.whoami())
    return {"tenant": response.tenant, "role": str(response.role), "expiresAt": response.expiresAt}


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


class CollectingSink(schema.BatchSink.Server):
    """A ``BatchSink`` that keeps every pushed chunk of Arrow IPC bytes.

    The server awaits each ``push`` before sending more (Cap'n Proto streaming), so a slow sink
    slows the query down rather than growing the server's memory. Each push holds whole IPC
    messages, so a client could decode push by push; this one simply concatenates.
    """

    def __init__(self):
        self.chunks: list[bytes] = []
        self.stats: dict | None = None

    async def push(self, ipc, **kwargs):
        self.chunks.append(bytes(ipc))

    async def done(self, stats, **kwargs):
        # Copy out of the message: the reader is only valid during the call.
        self.stats = stats.to_dict()

    def table(self) -> pa.Table:
        data = b"".join(self.chunks)
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


async def query_with_stats(tenant, sql: str, tag: int = 0) -> tuple[pa.Table, dict]:
    """Runs one SELECT; returns the result and the query's counters (``QueryStats`` as a dict,
    camelCase keys as in the schema, e.g. ``rowsReturned``, ``batches``, ``ipcBytes``)."""
    sink = CollectingSink()
    response = await _call(tenant.query(sql=sql, sink=sink, tag=tag))
    stats = response.stats.to_dict()
    return sink.table(), stats


async def query(tenant, sql: str, tag: int = 0) -> pa.Table:
    """Runs one SELECT and returns its result as a ``pyarrow.Table``.

    ``tag`` is optional; a concurrent ``tenant.cancel(tag)`` cancels the query.
    """
    table, _stats = await query_with_stats(tenant, sql, tag)
    return table


async def explain(tenant, sql: str) -> str:
    """The plan of a SELECT and what pruning would skip."""
    return (await _call(tenant.explain(sql=sql))).plan


# --------------------------------------------------------------------------------------------
# Tables and imports
# --------------------------------------------------------------------------------------------


def _table_info(info) -> dict:
    return {
        "name": info.name,
        "columns": [
            {"name": c.name, "type": c.type, "nullable": c.nullable} for c in info.columns
        ],
        "timeColumn": info.timeColumn,
        "partitionBy": list(info.partitionBy),
        "compression": str(info.compression),
        "rows": info.rows,
        "files": info.files,
        "bytes": info.bytes,
        "version": info.version,
    }


async def tables(tenant) -> list[dict]:
    """The tenant's tables (``TableInfo`` as dicts)."""
    response = await _call(tenant.tables())
    return [_table_info(info) for info in response.tables]


async def describe(tenant, table_name: str) -> dict:
    """One table's ``TableInfo``; ``not_found`` if the tenant has no such table."""
    return _table_info((await _call(tenant.describe(table=table_name))).table)


def ipc_chunks(table: pa.Table, chunk_bytes: int = WRITE_CHUNK_BYTES):
    """Yields the Arrow IPC stream of ``table`` in chunks of about ``chunk_bytes``.

    The table is cut into record batches of about ``chunk_bytes`` each, and each chunk is what
    the stream writer produced for one batch (the first also holds the schema message, the last
    the end-of-stream marker). So every chunk holds whole IPC messages, and the concatenation of
    all chunks is one IPC stream.
    """
    rows_per_batch = table.num_rows
    if table.num_rows and table.nbytes > chunk_bytes:
        rows_per_batch = chunk_bytes * table.num_rows // table.nbytes
    buffer = io.BytesIO()
    with pa.ipc.new_stream(buffer, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=max(1, rows_per_batch)):
            writer.write_batch(batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    # Closing the writer appended the end-of-stream marker (and the schema, if no batch was
    # written yet).
    if buffer.tell():
        yield buffer.getvalue()


async def import_table(tenant, table_name: str, table: pa.Table,
                       chunk_bytes: int = WRITE_CHUNK_BYTES) -> dict:
    """Appends the rows of ``table`` to the tenant's existing table ``table_name``.

    The columns must match the table's by position. Nothing is visible until ``commit``
    returns; returns its result: ``{"rows", "files", "bytes", "version"}``. Needs role writer or
    admin (``permission`` otherwise).
    """
    stream = (await _call(tenant.importBatches(table=table_name))).stream
    for chunk in ipc_chunks(table, chunk_bytes):
        # `write` is a `-> stream` method; awaiting each one keeps at most one chunk in flight,
        # which is the simplest correct flow control.
        await _call(stream.write(ipc=chunk))
    result = await _call(stream.commit())
    return {"rows": result.rows, "files": result.files, "bytes": result.bytes,
            "version": result.version}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cell(value) -> str:
    return "NULL" if value is None else str(value)


def format_table(table: pa.Table) -> str:
    """The rows of ``table`` as aligned text, with a header and a row count."""
    names = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(lines)


async def _main(args) -> int:
    connection = await connect(args.addr)
    try:
        tenant, _role = await login(connection.gateway, args.token)
        if args.tables:
            print(json.dumps(await tables(tenant), indent=2))
            return 0
        table, stats = await query_with_stats(tenant, args.sql)
        if args.format == "json":
            print(json.dumps(table.to_pylist(), default=str))
        else:
            print(format_table(table))
        if args.stats:
            print(json.dumps(stats), file=sys.stderr)
        return 0
    finally:
        connection.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run one SQL query on a Tessera node over RPC.")
    parser.add_argument("--addr", required=True, help="HOST:PORT of the node's RPC port")
    parser.add_argument("--token", default=os.environ.get("TESSERA_TOKEN"),
                        help="token (see `tessera token`); default $TESSERA_TOKEN")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--stats", action="store_true", help="print QueryStats to stderr")
    parser.add_argument("--tables", action="store_true", help="list the tenant's tables")
    parser.add_argument("sql", nargs="?", help="one SELECT statement")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or TESSERA_TOKEN) is required")
    if not args.tables and not args.sql:
        parser.error("give a SQL statement or --tables")
    try:
        return asyncio.run(capnp.run(_main(args)))
    except TesseraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
