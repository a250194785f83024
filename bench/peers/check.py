"""Answer normalization and comparison: every engine must give the reference engine's answer.

Normal form of a value (the agent's JSON forms):
- NULL -> None; bool stays bool; int, float and Decimal -> float (engines differ in whether
  COUNT is int64 or uint64 and whether SUM of a float column is a double or a decimal);
- DATE -> "YYYY-MM-DD"; TIMESTAMP -> "YYYY-MM-DD HH:MM:SS.ffffff" in UTC (chDB returns
  time-zone-aware values, which are converted to UTC first);
- strings as they are.
Rows compare as multisets unless the query has ORDER BY, then as sequences. Floats are equal
within a relative 1e-6 (absolute 1e-6 near zero), because engines sum in different orders.
"""

import datetime
import decimal
import math

REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-6
SHOW_ROWS_MAX = 10


def normalize_value(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
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


def values_equal(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE):
            return True
        return math.isnan(a) and math.isnan(b)
    return a == b


def rows_equal(a, b):
    return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))


def sort_key(row):
    # A total order over mixed None/float/str values, used only to line multisets up.
    return tuple((v is None, type(v).__name__, v if v is not None else 0) for v in row)


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
