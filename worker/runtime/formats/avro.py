"""Avro object container files via fastavro; the writer schema gives the Arrow types.

Codecs: null, deflate, snappy (cramjam) and zstandard (backports.zstd) are installed.
A union of one type and null is that type, nullable. A union of several non-null
types (`["string", "int"]`) has no single Arrow type: it is read as a string column
holding each value's text (`rows.as_text`: strings as they are, numbers and containers
as JSON, dates and times as ISO 8601), which a declared schema then casts.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import fastavro
import pyarrow as pa

from worker.runtime.formats.rows import as_text, rows_to_batch, text_for_mixed
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

_AVRO_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(), "boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(),
    "float": pa.float32(), "double": pa.float64(), "bytes": pa.binary(),
    "string": pa.string(),
}


def _avro_type(t: Any) -> pa.DataType:
    """Avro schema (as fastavro parses it) -> Arrow type; ValueError if unsupported."""
    if isinstance(t, str):
        if t in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[t]
        raise ValueError(f"named type {t}")
    if isinstance(t, list):
        others = [x for x in t if x != "null"]
        if len(others) == 1:
            return _avro_type(others[0])
        if not others:
            return pa.null()
        return pa.string()  # several branches: text (see the module docstring)
    logical = t.get("logicalType")
    base = t.get("type")
    if logical == "date":
        return pa.date32()
    if logical in ("timestamp-millis", "timestamp-micros"):
        return pa.timestamp("us", tz="UTC")
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return pa.timestamp("us")
    if logical == "decimal":
        return pa.decimal128(int(t["precision"]), int(t.get("scale", 0)))
    if logical in ("time-millis", "time-micros"):
        return pa.time64("us")
    if logical == "uuid":
        return pa.string()
    if base == "record":
        return pa.struct([pa.field(f["name"], _avro_type(f["type"])) for f in t["fields"]])
    if base == "array":
        return pa.list_(_avro_type(t["items"]))
    if base == "map":
        return pa.map_(pa.string(), _avro_type(t["values"]))
    if base == "enum":
        return pa.string()
    if base == "fixed":
        return pa.binary()
    return _avro_type(base)


Fix = Callable[[Any], Any]


def _union_fix(t: Any) -> Fix | None:
    """A function turning the values of multi-branch unions inside `t` into text, or
    None when `t` holds no such union (the common case costs nothing per row)."""
    if isinstance(t, list):
        others = [x for x in t if x != "null"]
        if len(others) > 1:
            return as_text
        return _union_fix(others[0]) if others else None
    if not isinstance(t, dict):
        return None
    base = t.get("type")
    if base == "record":
        fixes = {f["name"]: fx for f in t["fields"] if (fx := _union_fix(f["type"]))}
        if not fixes:
            return None

        def record(v: Any) -> Any:
            if v is None:
                return v
            return {k: (fixes[k](x) if k in fixes else x) for k, x in v.items()}

        return record
    if base == "array":
        item = _union_fix(t["items"])
        return None if item is None else (lambda v: v if v is None else [item(x) for x in v])
    if base == "map":
        val = _union_fix(t["values"])
        return None if val is None else (
            lambda v: v if v is None else {k: val(x) for k, x in v.items()})
    return None if isinstance(base, str) else _union_fix(base)


def parse_avro(stream: ChunkStream, spec: ParserSpec, batch_rows: int,
               rejects: RowRejects | None = None) -> Iterator[pa.RecordBatch]:
    buffered = io.BufferedReader(stream, buffer_size=1 << 20)
    if not buffered.peek(1):
        return
    reader = fastavro.reader(buffered)
    schema: pa.Schema | None = None
    fix: Fix | None = None
    try:
        top = reader.writer_schema
        fix = _union_fix(top)
        if isinstance(top, dict) and top.get("type") == "record":
            schema = pa.schema(
                [pa.field(f["name"], _avro_type(f["type"])) for f in top["fields"]]
            )
    except (ValueError, KeyError, TypeError):
        schema = None
    mixed = text_for_mixed(rejects)
    rows: list[dict[str, Any]] = []
    first = 1
    for rec in reader:
        if fix is not None:
            rec = fix(rec)
        rows.append(rec if isinstance(rec, dict) else {"value": rec})
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows, first, mixed, schema, fmt="avro")
            first += len(rows)
            rows = []
    if rows:
        yield rows_to_batch(rows, first, mixed, schema, fmt="avro")

