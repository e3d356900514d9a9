"""Committed values as `connector show` prints them.

Whatever a table holds must print: timestamps finer than a microsecond and dates
outside Python's years 1-9999 have no Python object, so every date, time and
timestamp column is rendered by Arrow itself, as an ISO 8601 string. A binary column
tagged as Arrow's uuid (as older versions committed UUIDs) prints its values as
canonical UUID text, or as the bytes when a value is not 16 bytes long.
"""

from __future__ import annotations

import uuid
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


def _tagged_uuid(field: pa.Field) -> bool:
    return (pa.types.is_binary(field.type) or pa.types.is_fixed_size_binary(field.type)) \
        and (field.metadata or {}).get(b"ARROW:extension:name") == b"arrow.uuid"


def _uuid_text(b: bytes | None) -> str | None:
    if b is None:
        return None
    return str(uuid.UUID(bytes=b)) if len(b) == 16 else repr(b)


def printable(table: pa.Table) -> pa.Table:
    """`table` with its temporal columns as ISO strings and uuid-tagged binary as UUID
    text (other columns untouched)."""
    for i, field in enumerate(table.schema):
        if _temporal(field.type):
            table = table.set_column(i, pa.field(field.name, pa.string()),
                                     _iso(table.column(i)))
        elif _tagged_uuid(field):
            text = pa.array([_uuid_text(b) for b in table.column(i).to_pylist()], pa.string())
            table = table.set_column(i, pa.field(field.name, pa.string()), text)
    return table


def rows(table: pa.Table, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Python rows of `table` (first `limit`), safe for any committed value."""
    if limit is not None:
        table = table.slice(0, max(limit, 0))
    for batch in printable(table).to_batches():
        yield from batch.to_pylist()
