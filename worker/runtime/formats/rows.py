"""Python rows (dicts) or columns (lists) -> one Arrow record batch: the row-at-a-time
parsers' last step."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow as pa

from worker.runtime.formats.errors import ParseError


def as_text(v: Any) -> str | None:
    """A value of no single type, as text a declared type can cast: strings as they are,
    bytes decoded (UTF-8), numbers, booleans, lists and dicts as JSON, dates and times
    in ISO 8601, anything else (Decimal, UUID) as `str` gives it."""
    if v is None or isinstance(v, str):
        return v
    if type(v) is int:  # what json.dumps gives, without its cost per call
        return str(v)
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, bool | int | float | list | tuple | dict):
        return json.dumps(v, default=_inner_text, ensure_ascii=False, separators=(",", ":"))
    return _inner_text(v)


def _inner_text(v: Any) -> Any:
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, set | frozenset):
        return list(v)
    return str(v)


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

# Python types whose values one Arrow column can hold together; a column mixing two kinds
# is "mixed" (anything else that fails is a value Arrow cannot hold, e.g. 10**30, 1j).
_KINDS: dict[type, str] = {
    bool: "bool", int: "number", float: "number", str: "str", bytes: "bytes",
    bytearray: "bytes", decimal.Decimal: "decimal", dt.datetime: "datetime",
    dt.date: "date", dt.time: "time", dt.timedelta: "timedelta", list: "list",
    tuple: "list", dict: "dict", uuid.UUID: "str",
}


def columns_to_batch(batch: RowColumns, first: int = 1,
                     mixed_as_text: bool = False) -> pa.RecordBatch:
    """One Arrow array per column, its type inferred from its values (as
    `RecordBatch.from_pylist` does per column). UUIDs become their canonical text (Delta
    Lake has no UUID type, and Arrow's uuid extension does not survive a table round
    trip). A column whose values are of several types is, with `mixed_as_text` (a
    declared schema will cast it), a string column of each value's text (`as_text`);
    without, a ParseError naming the column, both types and their rows (`first` numbers
    the batch's first row). Only a column Arrow cannot build pays for any of this."""
    if not batch.names:
        # Only empty rows: keep the row count (a batch of no arrays has no rows).
        return pa.RecordBatch.from_struct_array(
            pa.array([{}] * batch.rows, pa.struct([])))
    arrays: list[pa.Array] = []
    for name, values in zip(batch.names, batch.columns, strict=True):
        try:
            arr = pa.array(values)
        except MemoryError:
            raise
        except _UNCONVERTIBLE as e:
            arr = _slow_column(name, values, first, mixed_as_text, e)
        if isinstance(arr.type, pa.UuidType):  # every value a UUID or None
            arr = pa.array([None if v is None else str(v) for v in values], pa.string())
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=list(batch.names))


def _slow_column(name: str, values: list[Any], first: int, mixed_as_text: bool,
                 error: Exception) -> pa.Array:
    """The column the fast `pa.array` refused: UUIDs nested in lists or dicts as text
    (Arrow cannot nest its uuid type), then mixed types as text or an error."""
    plain = _uuids_as_text(values)
    if plain is not values:
        try:
            return pa.array(plain)
        except MemoryError:
            raise
        except _UNCONVERTIBLE:
            pass
    if mixed_as_text:
        return pa.array([as_text(v) for v in values], pa.string())
    mixed = _mixed_kinds(values)
    if mixed is not None:
        (a, i), (b, j) = mixed
        raise ParseError(
            f"column {name!r} holds {a} (row {first + i}) and {b} (row {first + j}); "
            "declare its type under schema.columns to convert every value to it (a value "
            "that does not convert is then rejected per on_invalid)") from error
    raise ParseError(f"column {name!r}: values of mixed or unsupported types: "
                     f"{error}") from error


def _uuids_as_text(values: list[Any]) -> list[Any]:
    """`values` with every UUID, at any depth, as its text; `values` itself when none."""
    found = False

    def walk(v: Any) -> Any:
        nonlocal found
        if isinstance(v, uuid.UUID):
            found = True
            return str(v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    out = [walk(v) for v in values]
    return out if found else values


def _mixed_kinds(values: Sequence[Any]) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(type name, index) of the first value and of the first of another kind, or None
    when every value is of one kind (or of a type not in `_KINDS`)."""
    head: tuple[str, int, str] | None = None
    for i, v in enumerate(values):
        if v is None:
            continue
        kind = _KINDS.get(type(v))
        if kind is None:
            return None
        if head is None:
            head = (type(v).__name__, i, kind)
        elif kind != head[2]:
            return (head[0], head[1]), (type(v).__name__, i)
    return None
