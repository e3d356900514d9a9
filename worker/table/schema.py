"""The table's columns.

Every row carries `_fragment`, the name of the fragment it was read from (on by
default; `CONNECTOR_FRAGMENT_COLUMN=0` turns it off). Delta Lake stores timestamps in
microseconds (nanosecond tables need a reader feature few engines have), so finer
timestamps are truncated to microseconds when a fragment is written.

A fragment's columns must be storable in Delta Lake before its file is written: Delta
column names are case-insensitive (`a` and `A` are one name) and some Arrow types have
no Delta type (time of day, durations, intervals, half floats, 256-bit decimals). Such a
fragment fails as a data error naming the column; it never reaches a commit, where it
would leave the dataset with a version that can never be committed. A UUID column
(Arrow's uuid extension) is stored as its canonical text.

The schema is part of what a fragment was read with: its read key is the listed
fingerprint and a hash of the schema, so a changed `schema:` re-reads every fragment.
"""

from __future__ import annotations

import functools
import hashlib
import uuid

import pyarrow as pa
import pyarrow.compute as pc
from deltalake.schema import Schema as DeltaSchema

from worker.arrays import repeat_string
from worker.models import FailureKind, FragmentFailure
from worker.runtime.conform import output_schema
from worker.settings import settings
from worker.spec import ConnectorSpec

FRAGMENT_COLUMN = "_fragment"


def fragment_column_on() -> bool:
    return settings().fragment_column


def declared(spec: ConnectorSpec) -> pa.Schema | None:
    """The table schema a declared `schema:` gives, or None (columns as the data has them)."""
    schema = output_schema(spec.schema_)
    if schema is None:
        return None
    if fragment_column_on():
        schema = schema.append(pa.field(FRAGMENT_COLUMN, pa.string(), nullable=False))
    return schema


def schema_tag(spec: ConnectorSpec) -> str:
    text = spec.schema_.model_dump_json() + f"|fragment={fragment_column_on()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_key(fingerprint: str, tag: str) -> str:
    """What state keeps per fragment: the same listed fingerprint read with another
    schema is another version."""
    return f"{tag}:{fingerprint}" if tag else fingerprint


def listed_fingerprint(key: str) -> str:
    """The listed fingerprint inside a read key (the inverse of read_key; tags are hex)."""
    tag, sep, fingerprint = key.partition(":")
    return fingerprint if sep and len(tag) == 12 else key


def _delta_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) and t.unit != "us":
        return pa.timestamp("us", t.tz)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_uint8(t):
        return pa.int16()
    if pa.types.is_uint16(t):
        return pa.int32()
    if pa.types.is_uint32(t):
        return pa.int64()
    return t


def _delta_refuses(schema: pa.Schema) -> str | None:
    """delta-rs's reason for refusing `schema`, or None (it raises a bare Exception)."""
    try:
        DeltaSchema.from_arrow(schema)
    except Exception as e:  # noqa: BLE001 - delta-rs has no narrower type for this
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        return text.removeprefix("External error: ").removeprefix("Schema error: ")
    return None


def column_count(schema: pa.Schema) -> int:
    """Fields of `schema`, nested ones counted (what MAX_COLUMNS bounds)."""
    def count(t: pa.DataType) -> int:
        return sum(1 + count(t.field(i).type) for i in range(t.num_fields))

    return sum(1 + count(f.type) for f in schema)


def _empty_object(t: pa.DataType, where: str) -> str | None:
    """The first struct of no fields in `t` (dotted path), or None."""
    if pa.types.is_struct(t) and t.num_fields == 0:
        return where
    for i in range(t.num_fields):
        child = t.field(i)
        # a list's item field is named by Arrow, not by the data: not part of the path
        name = where if not pa.types.is_struct(t) else f"{where}.{child.name}"
        found = _empty_object(child.type, name)
        if found is not None:
            return found
    return None


@functools.lru_cache(maxsize=256)
def storable_problem(schema: pa.Schema) -> str | None:
    """Why Delta Lake cannot hold columns of `schema` (naming them), or None."""
    for field in schema:
        # Parquet has no struct of no fields (a value that was always `{}`); its writer
        # raises an error that would otherwise look like the platform's.
        empty = _empty_object(field.type, field.name)
        if empty is not None:
            return (f"column {empty!r} is an object with no fields, which Parquet cannot "
                    "store; leave it out, or declare it as json")
    if _delta_refuses(schema) is None:
        return None
    seen: dict[str, str] = {}
    for name in schema.names:
        other = seen.setdefault(name.lower(), name)
        if other != name:
            return (f"columns {other!r} and {name!r} differ only in case (Delta Lake "
                    "column names are case-insensitive); rename one")
    for field in schema:
        why = _delta_refuses(pa.schema([field]))
        if why is not None:
            return f"column {field.name!r} ({field.type}) cannot be stored: {why}"
    return f"the columns cannot be stored: {_delta_refuses(schema)}"


def _uuid_text(col: pa.Array) -> pa.Array:
    """Arrow's uuid extension as canonical UUID text: Delta Lake would keep it as binary
    tagged `arrow.uuid`, which no Arrow reader loads back (its storage is 16 bytes fixed,
    Delta's binary is not), and every engine reads text."""
    return pa.array([None if b is None else str(uuid.UUID(bytes=b))
                     for b in col.storage.to_pylist()], pa.string())


def for_table(batch: pa.RecordBatch, fragment: str) -> pa.RecordBatch:
    """A batch as the table stores it: Delta-storable types, plus `_fragment`."""
    arrays, fields = [], []
    for field, col in zip(batch.schema, batch.columns, strict=True):
        if field.name == FRAGMENT_COLUMN and fragment_column_on():
            raise FragmentFailure(f"the data has a column named {FRAGMENT_COLUMN!r}, which "
                                  "the host adds; rename it or set CONNECTOR_FRAGMENT_COLUMN=0",
                                  FailureKind.DATA)
        if isinstance(field.type, pa.UuidType):
            col, field = _uuid_text(col), field.with_type(pa.string())
        target = _delta_type(field.type)
        if target != field.type:
            col = pc.cast(col, target, safe=False)  # sub-microsecond digits are dropped
            field = field.with_type(target)
        arrays.append(col)
        fields.append(field)
    if fragment_column_on():
        arrays.append(repeat_string(fragment, batch.num_rows))
        fields.append(pa.field(FRAGMENT_COLUMN, pa.string(), nullable=False))
    schema = pa.schema(fields)
    problem = storable_problem(schema)
    if problem is not None:
        raise FragmentFailure(f"the rows cannot join the Delta table: {problem}",
                              FailureKind.DATA)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
