"""The peer-comparison query set: Tessera SQL plus each peer's dialect of the same query.

Every query is written once in Tessera's SQL. `sql_for(query, engine, glob)` derives the text a
peer runs with a few fixed, visible rewrites (and `Query.variants` for anything a rewrite cannot
express). The results file records the exact text every engine ran, so a reviewer can read it.

Rewrites:
- DuckDB, DataFusion, Polars: `DATE(timestamp)` -> `CAST(timestamp AS DATE)`; the table `events`
  is a view / registered table / SQLContext frame over the generator's Parquet files.
- chDB: `DATE(timestamp)` -> `toDate(timestamp)`, `FROM events` -> `FROM file('glob', Parquet)`,
  and `SETTINGS` (threads, UTC session time zone) appended by the engine wrapper.
- NULL ordering differs between engines by default (Tessera sorts NULL above every value, as
  PostgreSQL does; DuckDB and chDB put NULLs last in both directions), so the query that sorts by
  a nullable column (q12) filters NULLs out, which also makes its top 10 meaningful.
"""

from dataclasses import dataclass, field

TESSERA_ENGINES = ("tessera", "tessera-rpc")


@dataclass
class Query:
    id: str
    name: str
    sql: str  # Tessera SQL; "{point_id}" is filled in from the row count
    spec: bool = False  # one of the spec's four queries
    ordered: bool = False  # has ORDER BY: answers compare as sequences, not multisets
    variants: dict = field(default_factory=dict)  # engine -> full SQL text replacing the rewrite


QUERIES = [
    Query("q01", "point lookup by id", "SELECT * FROM events WHERE id = {point_id}", spec=True),
    Query(
        "q02",
        "time-range COUNT",
        "SELECT COUNT(*) FROM events "
        "WHERE timestamp BETWEEN '2024-01-01' AND '2024-01-31 23:59:59'",
        spec=True,
    ),
    Query(
        "q03",
        "SUM GROUP BY category",
        "SELECT category, SUM(amount) FROM events GROUP BY category",
        spec=True,
    ),
    Query(
        "q04",
        "per-day per-category AVG",
        "SELECT DATE(timestamp) AS day, category, AVG(amount) FROM events "
        "WHERE timestamp >= '2024-01-01' GROUP BY DATE(timestamp), category ORDER BY day, category",
        spec=True,
        ordered=True,
    ),
    Query(
        "q05",
        "selective numeric filter",
        "SELECT COUNT(*), SUM(amount) FROM events WHERE amount > 999.0",
    ),
    Query(
        "q06",
        "non-selective numeric filter",
        "SELECT COUNT(*), AVG(amount) FROM events WHERE amount > 10.0",
    ),
    Query("q07", "string equality", "SELECT COUNT(*) FROM events WHERE status = 'refunded'"),
    Query(
        "q08",
        "IN list",
        "SELECT SUM(amount) FROM events WHERE category IN ('books', 'toys', 'music')",
    ),
    Query("q09", "LIKE prefix", "SELECT COUNT(*) FROM events WHERE tenant_id LIKE 'tenant-0%'"),
    Query(
        "q10",
        "high-cardinality GROUP BY",
        "SELECT user_id, COUNT(*) AS n FROM events GROUP BY user_id ORDER BY n DESC, user_id LIMIT 10",
        ordered=True,
    ),
    Query(
        "q11",
        "MIN/MAX",
        "SELECT MIN(amount), MAX(amount), MIN(timestamp), MAX(timestamp) FROM events",
    ),
    Query(
        "q12",
        "ORDER BY LIMIT",
        "SELECT id, amount FROM events WHERE amount IS NOT NULL ORDER BY amount DESC, id LIMIT 10",
        ordered=True,
    ),
    Query("q13", "SELECT * selective filter", "SELECT * FROM events WHERE user_id = 4242"),
    Query(
        "q14",
        "week status counts",
        "SELECT status, COUNT(*) FROM events "
        "WHERE timestamp BETWEEN '2023-10-01' AND '2023-10-07 23:59:59' GROUP BY status",
    ),
]


def point_id(rows):
    """The id q01 looks up: in the middle of the table, not on a file or row-group edge."""
    return rows // 2 + 7


def select(ids):
    """The queries named in `ids` (all when empty), in set order; unknown ids are an error."""
    if not ids:
        return list(QUERIES)
    known = {q.id for q in QUERIES}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SystemExit(f"unknown query id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [q for q in QUERIES if q.id in ids]


def sql_for(query, engine, rows, glob):
    """The SQL text `engine` runs for `query` on a table of `rows` rows read from `glob`."""
    if engine in query.variants:
        text = query.variants[engine]
    else:
        text = query.sql
        if engine == "chdb":
            text = text.replace("DATE(timestamp)", "toDate(timestamp)")
            text = text.replace("FROM events", "FROM file('{glob}', Parquet)")
        elif engine not in TESSERA_ENGINES:
            text = text.replace("DATE(timestamp)", "CAST(timestamp AS DATE)")
    # str.replace, not str.format: the SQL itself may contain braces some day.
    return text.replace("{point_id}", str(point_id(rows))).replace("{glob}", glob)
