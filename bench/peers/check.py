"""Answer normalization and comparison: every engine must give the reference engine's answer.

Normal form of a value (the agent's JSON forms):
- NULL -> None; bool stays bool; int and float -> float (engines differ in whether COUNT is
  int64 or uint64);
- Decimal stays Decimal (DECIMAL results: the peers' Arrow decimals, Tessera's `{"decimal": "..."}`
  values, see engines.Tessera), so exact results can be compared exactly;
- DATE -> "YYYY-MM-DD"; TIMESTAMP -> "YYYY-MM-DD HH:MM:SS.ffffff" in UTC (chDB returns
  time-zone-aware values, which are converted to UTC first);
- strings as they are.
Rows compare as multisets unless the query has ORDER BY, then as sequences. Floats are equal
within a relative 1e-6 (absolute 1e-6 near zero), because engines sum in different orders.
Decimals:
- decimal and decimal: equal when they are the same number, except that they may differ by one
  unit in the last place of the coarser of the two when that place is beyond the
  EXACT_DECIMAL_PLACES-th decimal: a DECIMAL quotient (AVG) is rounded by some engines (Tessera:
  0.050145) and truncated by others (DataFusion: 0.050144). SUM, MIN and MAX of DECIMAL(p, s <= 4)
  columns are exact in every engine and must match to the cent;
- decimal and float (DuckDB, chDB and Polars return AVG of a decimal as a double): as floats, but
  within one unit in the decimal's last place as well, since a decimal is only known to that place.
"""

import datetime
import decimal
import math

REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-6
EXACT_DECIMAL_PLACES = 4
SHOW_ROWS_MAX = 10


def normalize_value(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"no normal form for {type(value).__name__} value {value!r}")


def normalize(rows):
    return [tuple(normalize_value(v) for v in row) for row in rows]


def last_place(value):
    """One unit in the last place of a finite Decimal: Decimal('0.050145') -> Decimal('0.000001')."""
    return decimal.Decimal(1).scaleb(value.as_tuple().exponent)


def decimals_equal(a, b):
    if not (a.is_finite() and b.is_finite()):
        return a == b or (a.is_nan() and b.is_nan())
    if a == b:
        return True
    unit = max(last_place(a), last_place(b))  # the coarser of the two last places
    return unit < decimal.Decimal(1).scaleb(-EXACT_DECIMAL_PLACES) and abs(a - b) <= unit


def values_equal(a, b):
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return decimals_equal(a, b)
    if isinstance(a, decimal.Decimal) and isinstance(b, float):
        a, b = b, a
    if isinstance(a, float) and isinstance(b, decimal.Decimal):
        if not b.is_finite():
            return math.isnan(a) and b.is_nan() or float(b) == a
        tolerance = max(ABS_TOLERANCE, float(last_place(b)))
        return math.isclose(a, float(b), rel_tol=REL_TOLERANCE, abs_tol=tolerance)
    if isinstance(a, float) and isinstance(b, float):
        if math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE):
            return True
        return math.isnan(a) and math.isnan(b)
    return a == b


def rows_equal(a, b):
    return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))


def sort_key(row):
    # A total order over mixed None/number/str values, used only to line multisets up; floats and
    # decimals sort as one kind, so one engine's DECIMAL lines up with another's double.
    def key(v):
        if v is None:
            return (True, "", 0)
        if isinstance(v, (float, decimal.Decimal)):
            return (False, "number", float(v))
        return (False, type(v).__name__, v)

    return tuple(key(v) for v in row)


def first_difference(reference, answer, ordered):
    """None when the answers match, else a short text naming the first rows that differ."""
    if not ordered:
        # Sorting then comparing with tolerance could misalign two rows whose floats differ
        # in the last bits only if a float were the leading sort key and near a tie; the
        # queries' multiset answers lead with a group key (string, date or int).
        reference = sorted(reference, key=sort_key)
        answer = sorted(answer, key=sort_key)
    if len(reference) != len(answer):
        head = f"row counts differ: reference {len(reference)}, answer {len(answer)}"
    else:
        head = None
    for index, (want, got) in enumerate(zip(reference, answer)):
        if not rows_equal(want, got):
            return (head + "; " if head else "") + describe(index, reference, answer)
    if head:
        return head + "; " + describe(min(len(reference), len(answer)), reference, answer)
    return None


def describe(index, reference, answer):
    stop = index + SHOW_ROWS_MAX
    lines = [f"first difference at row {index}"]
    lines.append("  reference: " + ("; ".join(map(str, reference[index:stop])) or "(no more rows)"))
    lines.append("  answer:    " + ("; ".join(map(str, answer[index:stop])) or "(no more rows)"))
    return "\n".join(lines)
