"""Python rows (dicts) or columns (lists) -> one Arrow record batch: the row-at-a-time
parsers' last step."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pyarrow as pa

from worker.runtime.formats.errors import ParseError


def as_text(v: Any) -> str | None:
    """A value of no single type, as text: strings as they are, the rest as JSON."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return json.dumps(v, default=str, ensure_ascii=False, separators=(",", ":"))


def rows_to_batch(
    rows: list[dict[str, Any]], schema: pa.Schema | None = None, mixed_as_text: bool = False
) -> pa.RecordBatch:
    """Python dicts -> a batch; columns are the union of keys in first-seen order.

    A column whose values have no common type is an error, or with `mixed_as_text`
    a string column (see `as_text`): a declared schema then casts it."""
    if schema is not None:
        try:
            return pa.RecordBatch.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass  # fall back to inference
    if rows and not any(rows):
        # Only empty objects: keep the row count (from_pylist would make zero rows).
        return pa.RecordBatch.from_struct_array(pa.array(rows, pa.struct([])))
    if rows:
        # Fast path: every row's keys are the first row's (the union is no bigger), so
        # pyarrow's own conversion (which takes its columns from the first row) is exact.
        try:
            if len(set().union(*rows)) == len(rows[0]):
                return pa.RecordBatch.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass  # the slow path below names the column
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    arrays: list[pa.Array] = []
    for k in keys:
        values = [r.get(k) for r in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            if mixed_as_text:
                arrays.append(pa.array([as_text(v) for v in values], pa.string()))
                continue
            raise ParseError(f"column {k!r}: values of mixed or unsupported types: {e}") from e
    return pa.RecordBatch.from_arrays(arrays, names=list(keys))



class RowColumns(NamedTuple):
    """A batch of custom-parser rows as columns: `rows` rows, one list per name."""

    rows: int
    names: tuple[str, ...]
    columns: list[list[Any]]


_UNCONVERTIBLE = (pa.ArrowException, TypeError, ValueError, OverflowError, RecursionError)


def columns_to_batch(batch: RowColumns) -> pa.RecordBatch:
    """One Arrow array per column, its type inferred from its values (as
    `RecordBatch.from_pylist` does per column); a column Arrow cannot build is a
    ParseError naming it."""
    if not batch.names:
        # Only empty rows: keep the row count (a batch of no arrays has no rows).
        return pa.RecordBatch.from_struct_array(
            pa.array([{}] * batch.rows, pa.struct([])))
    arrays: list[pa.Array] = []
    for name, values in zip(batch.names, batch.columns, strict=True):
        try:
            arrays.append(pa.array(values))
        except MemoryError:
            raise
        except _UNCONVERTIBLE as e:
            raise ParseError(f"column {name!r}: values of mixed or unsupported types: "
                             f"{e}") from e
    return pa.RecordBatch.from_arrays(arrays, names=list(batch.names))
