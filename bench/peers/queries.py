"""The peer-comparison query set: Tessera SQL plus each peer's dialect of the same query.

Every query is written once in Tessera's SQL. `sql_for(query, engine, rows, globs, sf)` derives
the text a peer runs with a few fixed, visible rewrites (and `Query.variants` for anything a
rewrite cannot express). The results file records the exact text every engine ran, so a reviewer
can read it.

Two tables (`Query.table` names the one a query reads; every query reads one):
- `events`: made by `tessera gen events` (q01-q15);
- `lineitem`: TPC-H `lineitem` made by DuckDB's dbgen at scale factor `sf` and written by DuckDB
  as one Parquet file (q16-q20): DECIMAL(15,2) money, DATE columns, strings, BIGINT keys.

Rewrites:
- DuckDB, DataFusion, Polars: `DATE(timestamp)` -> `CAST(timestamp AS DATE)`; each table is a
  view / registered table / SQLContext frame of that name over its Parquet file(s).
- chDB: `DATE(timestamp)` -> `toDate(timestamp)`, `FROM <table>` -> `FROM file('glob', Parquet)`,
  and `SETTINGS` (threads, UTC session time zone) appended by the engine wrapper.
- Tessera's SQL subset has no arithmetic inside aggregates and no INTERVAL, so the TPC-H-like
  queries aggregate plain columns and filter on literal dates (compared with DATE columns as
  strings, which every engine casts to DATE).
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
    table: str = "events"  # the table the query reads: "events" or "lineitem"


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
    Query(
        "q15",
        "filtered high-cardinality top-k",
        "SELECT user_id, COUNT(*) AS n FROM events WHERE category = 'books' "
        "GROUP BY user_id ORDER BY n DESC, user_id LIMIT 10",
        ordered=True,
    ),
    Query(
        "q16",
        "lineitem: TPC-H Q1-like report",
        "SELECT l_returnflag, l_linestatus, SUM(l_quantity) AS sum_qty, SUM(l_extendedprice) AS sum_base_price, "
        "SUM(l_discount) AS sum_disc, AVG(l_quantity) AS avg_qty, AVG(l_extendedprice) AS avg_price, "
        "AVG(l_discount) AS avg_disc, COUNT(*) AS count_order, MIN(l_extendedprice) AS min_price, "
        "MAX(l_tax) AS max_tax FROM lineitem WHERE l_shipdate <= '1998-09-02' "
        "GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
        ordered=True,
        table="lineitem",
    ),
    Query(
        "q17",
        "lineitem: TPC-H Q6-like filtered SUM",
        "SELECT SUM(l_extendedprice) AS revenue_base, COUNT(*) AS n FROM lineitem "
        "WHERE l_shipdate >= '1994-01-01' AND l_shipdate < '1995-01-01' "
        "AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
        table="lineitem",
    ),
    Query(
        "q18",
        "lineitem: high-cardinality integer GROUP BY",
        "SELECT l_orderkey, SUM(l_quantity) AS q FROM lineitem GROUP BY l_orderkey ORDER BY q DESC, l_orderkey LIMIT 10",
        ordered=True,
        table="lineitem",
    ),
    Query(
        "q19",
        "lineitem: point lookup by l_orderkey",
        "SELECT * FROM lineitem WHERE l_orderkey = {orderkey}",
        table="lineitem",
    ),
    Query(
        "q20",
        "lineitem: MIN/MAX date and decimal",
        "SELECT MIN(l_shipdate), MAX(l_shipdate), MIN(l_extendedprice), MAX(l_extendedprice) FROM lineitem",
        table="lineitem",
    ),
]


def point_id(rows):
    """The id q01 looks up: in the middle of the table, not on a file or row-group edge."""
    return rows // 2 + 7


def lineitem_orderkey(sf):
    """The l_orderkey q19 looks up: an existing order in the middle of the table.

    dbgen numbers orders sparsely: the i-th order (1-based) has key ((i-1) // 8) * 32 + (i-1) % 8 + 1,
    so every key whose (key-1) % 32 < 8 exists up to the largest, 6,000,000 x sf (1 to 7 lines each)."""
    middle = int(6_000_000 * sf) // 2
    return middle - middle % 32 + 7


def select(ids):
    """The queries named in `ids` (all when empty), in set order; unknown ids are an error."""
    if not ids:
        return list(QUERIES)
    known = {q.id for q in QUERIES}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SystemExit(f"unknown query id(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [q for q in QUERIES if q.id in ids]


def sql_for(query, engine, rows, globs, sf):
    """The SQL text `engine` runs for `query`: `events` has `rows` rows, `lineitem` is TPC-H at scale
    factor `sf`, and `globs[table]` is the Parquet glob the peers read for each table."""
    if engine in query.variants:
        text = query.variants[engine]
    else:
        text = query.sql
        if engine == "chdb":
            text = text.replace("DATE(timestamp)", "toDate(timestamp)")
            text = text.replace(f"FROM {query.table}", "FROM file('{glob}', Parquet)")
        elif engine not in TESSERA_ENGINES:
            text = text.replace("DATE(timestamp)", "CAST(timestamp AS DATE)")
    # str.replace, not str.format: the SQL itself may contain braces some day.
    text = text.replace("{point_id}", str(point_id(rows))).replace("{orderkey}", str(lineitem_orderkey(sf)))
    return text.replace("{glob}", globs[query.table]) if "{glob}" in text else text
