"""Python rows (dicts) or columns (lists) -> one Arrow record batch: the last step of the
row-at-a-time parsers (JSON arrays and lines pyarrow's reader refuses, Avro, a custom
`parser_function`), one path for all of them.

Each column is one `pa.array` over its values (of the writer's type when the format
declares one, as Avro does). Only a column Arrow refuses pays for more: UUIDs as their
canonical text, then a column of several Python types as text when a declared schema
will cast it (so conformance rejects only the values that do not convert, by row and
column), else a ParseError naming the column, both types and their rows, or the row of
the value Arrow cannot hold.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from worker.runtime.formats.errors import ParseError
from worker.runtime.shim import columns

if TYPE_CHECKING:
    from worker.runtime.rejects import RowRejects


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


def text_for_mixed(rejects: RowRejects | None) -> bool:
    """Whether a column of several Python types is read as text: only when declared
    columns will cast it (a type to convert to is what makes the text meaningful)."""
    return rejects is not None and bool(rejects.schema.columns)


def rows_to_batch(rows: list[dict[str, Any]], first: int = 1, mixed_as_text: bool = False,
                  types: pa.Schema | None = None, fmt: str = "custom") -> pa.RecordBatch:
    """Python dicts -> a batch: the union of their keys in first-seen order, None where a
    row lacks a key, each column as `columns_to_batch` builds it."""
    return columns_to_batch(RowColumns(*columns(rows, first)), first, mixed_as_text, types,
                            fmt)


def columns_to_batch(batch: RowColumns, first: int = 1, mixed_as_text: bool = False,
                     types: pa.Schema | None = None, fmt: str = "custom") -> pa.RecordBatch:
    """One Arrow array per column: of its type in `types` (the format's own schema, e.g.
    Avro's writer schema) when that takes the values, else inferred from them (as
    `RecordBatch.from_pylist` does per column). UUIDs become their canonical text (Delta
    Lake has no UUID type, and Arrow's uuid extension does not survive a table round
    trip). A column whose values are of several types is, with `mixed_as_text` (a
    declared schema will cast it), a string column of each value's text (`as_text`);
    without, a ParseError `<fmt>: rows <first>-<last>: ...` naming the column, both types
    and their rows. Only a column Arrow cannot build pays for any of this."""
    if not batch.names:
        # Only empty rows: keep the row count (a batch of no arrays has no rows).
        return pa.RecordBatch.from_struct_array(
            pa.array([{}] * batch.rows, pa.struct([])))
    declared = dict(zip(types.names, types.types, strict=True)) if types is not None else {}
    arrays: list[pa.Array] = []
    for name, values in zip(batch.names, batch.columns, strict=True):
        typ = declared.get(name)
        try:
            arr = pa.array(values, typ)
        except MemoryError:
            raise
        except _UNCONVERTIBLE as e:
            try:
                arr = _slow_column(name, values, first, mixed_as_text, typ, e)
            except ParseError as why:
                raise ParseError(
                    f"{fmt}: rows {first}-{first + batch.rows - 1}: {why}") from why.__cause__
        if isinstance(arr.type, pa.UuidType):  # every value a UUID or None
            arr = pa.array([None if v is None else str(v) for v in values], pa.string())
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=list(batch.names))


def _slow_column(name: str, values: list[Any], first: int, mixed_as_text: bool,
                 typ: pa.DataType | None, error: Exception) -> pa.Array:
    """The column the fast `pa.array` refused: UUIDs (also nested in lists and dicts,
    where Arrow cannot nest its uuid type) as text, then the type inferred when the
    format's own type did not take the values, then mixed types as text or an error."""
    plain = _uuids_as_text(values)
    attempts = [(plain, typ)] if plain is not values else []
    if typ is not None:
        attempts.append((plain, None))
    for vals, t in attempts:
        try:
            return pa.array(vals, t)
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
    bad = _first_unconvertible(plain)
    if bad is not None:
        i, why = bad
        v = plain[i]
        raise ParseError(f"column {name!r} row {first + i}: {type(v).__name__} {_short(v)} "
                         f"cannot be stored ({why}); declare its type under schema.columns "
                         "to read it as text") from error
    raise ParseError(f"column {name!r}: values of mixed or unsupported types: "
                     f"{error}") from error


def _first_unconvertible(values: list[Any]) -> tuple[int, str] | None:
    """(index, Arrow's reason) of the first value Arrow refuses on its own, or None when
    each converts alone (the values only clash together, e.g. inside lists)."""
    for i, v in enumerate(values):  # only on the way to an error
        try:
            pa.array([v])
        except MemoryError:
            raise
        except _UNCONVERTIBLE as e:
            return i, str(e) or type(e).__name__
    return None


def _short(v: Any, limit: int = 60) -> str:
    try:
        text = repr(v)
    except ValueError:  # an int past Python's own limit on digits as text
        return "(too long to show)"
    return text if len(text) <= limit else text[:limit] + "..."


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
