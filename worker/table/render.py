"""Committed values as `connector show` prints them.

Whatever a table holds must print: timestamps finer than a microsecond and dates
outside Python's years 1-9999 have no Python object, so every date, time and
timestamp column is rendered by Arrow itself, as an ISO 8601 string.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def _temporal(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t)


def _iso(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    text = pc.cast(col, pa.string())
    if pa.types.is_timestamp(col.type):
        # Arrow prints "2024-01-02 03:04:05.123456Z"; ISO 8601 joins date and time with T.
        text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return text


def printable(table: pa.Table) -> pa.Table:
    """`table` with its temporal columns as ISO strings (other columns untouched)."""
    for i, field in enumerate(table.schema):
        if _temporal(field.type):
            table = table.set_column(i, pa.field(field.name, pa.string()),
                                     _iso(table.column(i)))
    return table


def rows(table: pa.Table, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Python rows of `table` (first `limit`), safe for any committed value."""
    if limit is not None:
        table = table.slice(0, max(limit, 0))
    for batch in printable(table).to_batches():
        yield from batch.to_pylist()
