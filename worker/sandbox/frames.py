"""Host-side validation of the frames a sandbox sends: nothing it writes is trusted.

User code runs in the same process as the runtime and can write to the protocol's file
descriptor, so every frame the host reads is hostile until checked here:

- Control frames (`J`) are parsed and validated against the schema of the phase the
  session is in (`OpenReply`, `ListReply`, `ReadReply`); anything else raises
  `ProtocolError` (a user failure of the fragment, never a host traceback).
- Arrow frames (`A`) must hold exactly one uncompressed record batch that passes
  Arrow's full validation (offsets in bounds, UTF-8 strings). Compressed IPC bodies
  are refused before they are decompressed: a few KB of zstd can decode to gigabytes.
- A batch's *logical* size (`logical_size`) is what the output cap counts: a dictionary
  column counts as the plain column it stands for, and a column with no data buffers
  (null type, empty struct) still costs its length. Types whose logical size can
  exceed their encoded size by aliasing (unions, run-end encoding, view types) are not
  accepted at all: the runtime never produces them.
- A schema may declare at most `MAX_COLUMNS` fields (nested ones counted), counted from
  the flatbuffer before pyarrow builds a field: width costs the host memory that the
  output cap, which counts bytes, does not see.
- `plain` turns dictionary columns into their value type, so a dataset never mixes
  dictionary and plain columns of one name.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from worker.column_types import MAX_COLUMNS
from worker.models import RejectedRow
from worker.protocol import ProtocolError


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ready(_Frame):
    op: Literal["ready"]


class Log(_Frame):
    op: Literal["log"]
    text: StrictStr


class Failed(_Frame):
    """The runtime's report of a failed op. `kind` is a claim, not a fact: see
    FramedSession for which claims the host believes."""

    op: Literal["error"]
    kind: StrictStr = "user"
    message: StrictStr
    traceback: StrictStr = ""


class Listed(_Frame):
    op: Literal["done"]
    count: Annotated[StrictInt, Field(ge=0)]


class Read(_Frame):
    op: Literal["done"]
    rows: Annotated[StrictInt, Field(ge=0)]
    read: Annotated[StrictInt, Field(ge=0)] = 0
    rejected: Annotated[StrictInt, Field(ge=0)] = 0
    defaulted: Annotated[StrictInt, Field(ge=0)] = 0
    warnings: list[StrictStr] = Field(default_factory=list, max_length=1000)
    rejects: list[RejectedRow] = Field(default_factory=list, max_length=100_000)


OpenReply = TypeAdapter(Annotated[Ready | Log | Failed, Field(discriminator="op")])
ListReply = TypeAdapter(Annotated[Listed | Log | Failed, Field(discriminator="op")])
ReadReply = TypeAdapter(Annotated[Read | Log | Failed, Field(discriminator="op")])
Control = Ready | Log | Failed | Listed | Read


# A JSON escape of a UTF-16 surrogate: text that may hold a lone one after decoding.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _escaped(v: Any) -> Any:
    """`v` with every lone surrogate in its strings written out (`\\udcff`), as the
    terminal shows them: no record, file or Redis value the host writes can hold one."""
    if isinstance(v, str):
        return v.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(v, list):
        return [_escaped(x) for x in v]
    if isinstance(v, dict):
        return {_escaped(k): _escaped(x) for k, x in v.items()}
    return v


def parse_control(body: bytes, phase: TypeAdapter[Any]) -> Control:
    """A control frame as the model `phase` allows, or ProtocolError saying why not.
    Lone surrogates (valid JSON escapes, but not Unicode) in its text are escaped."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; absurd nesting
        raise ProtocolError("control frame is not JSON") from None
    if _SURROGATE_ESCAPE.search(body):
        obj = _escaped(obj)
    if not isinstance(obj, dict):
        raise ProtocolError(f"control frame is a JSON {type(obj).__name__}, not an object")
    try:
        return phase.validate_python(obj)  # type: ignore[no-any-return]
    except PydanticValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        op = obj.get("op")
        raise ProtocolError(f"unexpected control frame {_short(op)}: {where}: {first['msg']}"
                            ) from None


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------- Arrow

# Message.fbs / Schema.fbs: the union MessageHeader takes vtable slots 1 (type) and 2
# (value); DictionaryBatch.data is slot 1, RecordBatch.compression is slot 3.
_HEADER_DICTIONARY, _HEADER_BATCH = 2, 3
_U16, _U32, _I32 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<i")


def _field(buf: bytes, table: int, slot: int) -> int | None:
    """Position of a flatbuffer table's field, or None when it is absent."""
    vtable = table - _I32.unpack_from(buf, table)[0]
    (vsize,) = _U16.unpack_from(buf, vtable)
    at = vtable + 4 + 2 * slot
    if at + 2 > vtable + vsize:
        return None
    (off,) = _U16.unpack_from(buf, at)
    return table + off if off else None


def _deref(buf: bytes, pos: int) -> int:
    return pos + _U32.unpack_from(buf, pos)[0]


_HEADER_SCHEMA = 1  # Message.header_type of a Schema; Schema.fields and Field.children
_SCHEMA_FIELDS, _FIELD_CHILDREN = 1, 5  # are slots 1 and 5


class TooWide(Exception):
    """An Arrow frame's schema has more columns than a table may (a limit, not a forgery)."""


def _tables(buf: bytes, table: int, slot: int) -> Iterator[int]:
    """Positions of the tables in a flatbuffer table's vector of tables (lazily)."""
    at = _field(buf, table, slot)
    if at is None:
        return
    vec = _deref(buf, at)
    (n,) = _U32.unpack_from(buf, vec)
    for i in range(n):
        yield _deref(buf, vec + 4 + 4 * i)


def schema_width(metadata: bytes, stop: int) -> int:
    """Fields, nested ones counted, that an IPC schema message declares (0 for other
    messages), read from the flatbuffer before pyarrow builds anything from it; counting
    ends past `stop`, so a million fields (or offsets that loop) cost `stop` steps."""
    root = _U32.unpack_from(metadata, 0)[0]
    kind_at = _field(metadata, root, 1)
    header_at = _field(metadata, root, 2)
    if kind_at is None or header_at is None or metadata[kind_at] != _HEADER_SCHEMA:
        return 0
    stack = [_tables(metadata, _deref(metadata, header_at), _SCHEMA_FIELDS)]
    count = 0
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        count += 1
        if count > stop:
            break
        stack.append(_tables(metadata, child, _FIELD_CHILDREN))
    return count


def _compressed(metadata: bytes) -> bool:
    """Whether an IPC message's record batch declares body compression."""
    root = _U32.unpack_from(metadata, 0)[0]
    kind_at = _field(metadata, root, 1)
    header_at = _field(metadata, root, 2)
    if kind_at is None or header_at is None:
        return False
    kind = metadata[kind_at]
    batch = _deref(metadata, header_at)
    if kind == _HEADER_DICTIONARY:
        data_at = _field(metadata, batch, 1)
        if data_at is None:
            return False
        batch = _deref(metadata, data_at)
    elif kind != _HEADER_BATCH:
        return False
    return _field(metadata, batch, 3) is not None


def decode_batch(body: bytes) -> pa.RecordBatch:
    """The one record batch of an Arrow frame, validated; ProtocolError otherwise."""
    buf = pa.py_buffer(body)
    try:
        batches = 0
        for message in pa.ipc.MessageReader.open_stream(buf):
            if message.type == "schema" and schema_width(bytes(message.metadata),
                                                         MAX_COLUMNS) > MAX_COLUMNS:
                raise TooWide(f"the rows have more than {MAX_COLUMNS} columns (nested "
                              "fields counted), the most a table may have")
            if message.type in ("dictionary batch", "record batch"):
                if _compressed(bytes(message.metadata)):
                    raise ProtocolError("Arrow frame is compressed; the runtime never "
                                        "compresses, so it is refused undecoded")
                batches += message.type == "record batch"
        if batches != 1:
            raise ProtocolError(f"Arrow frame holds {batches} record batches, not 1")
        with pa.ipc.open_stream(buf) as reader:
            batch = reader.read_next_batch()
        batch.validate(full=True)
        _check_types(batch.schema)  # reads every field name too: they may not be UTF-8
    except (ProtocolError, TooWide):
        raise
    except Exception as e:  # noqa: BLE001 - whatever hostile bytes make pyarrow raise
        # (ArrowInvalid, OSError for a bad stream, struct.error from _compressed, ...)
        raise ProtocolError(f"Arrow frame is not a valid record batch: "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    return batch


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _refused(t: pa.DataType) -> bool:
    names = ("is_union", "is_run_end_encoded", "is_string_view", "is_binary_view",
             "is_list_view", "is_large_list_view")
    return any(getattr(pa.types, n, lambda _: False)(t) for n in names)


def _check_types(schema: pa.Schema) -> None:
    def walk(t: pa.DataType, where: str) -> None:
        if _refused(t):
            raise ProtocolError(f"column {where!r} has type {t}, which is not accepted")
        if pa.types.is_dictionary(t):
            v = t.value_type
            if not (_binary_like(v) or _fixed_width(v)):
                raise ProtocolError(f"column {where!r} is a dictionary of {v}; only "
                                    "dictionaries of strings, binary and scalars are accepted")
            return
        for i in range(t.num_fields):
            walk(t.field(i).type, f"{where}.{t.field(i).name}")

    for f in schema:
        walk(f.type, f.name)


def _binary_like(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))


def _fixed_width(t: pa.DataType) -> bool:
    try:
        return t.bit_width > 0
    except ValueError:
        return False


# --------------------------------------------------------------------------- sizes


def logical_size(batch: pa.RecordBatch) -> int:
    """Bytes the batch stands for once decoded (what the output cap counts): its
    buffers, plus every dictionary column as the plain column it decodes to, plus one
    bit per value for arrays that carry no data buffer (null type, empty structs)."""
    total = batch.get_total_buffer_size() + _bits(batch.num_rows)
    for col in batch.columns:
        total += _extra(col)
    return total


def _bits(n: int) -> int:
    return (n + 7) // 8


def _extra(arr: pa.Array) -> int:
    """What decoding adds to `arr`'s buffers (recursively)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _decoded_dictionary(arr)
    if pa.types.is_null(t) or (pa.types.is_struct(t) and t.num_fields == 0):
        return _bits(len(arr))
    if pa.types.is_struct(t):
        return sum(_extra(arr.field(i)) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _extra(arr.keys) + _extra(arr.items)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _extra(arr.values)
    return 0


def _decoded_dictionary(arr: pa.DictionaryArray) -> int:
    v = arr.type.value_type
    valid = len(arr) - arr.null_count
    if _fixed_width(v):
        return valid * max(1, v.bit_width // 8)
    offsets = 8 if (pa.types.is_large_string(v) or pa.types.is_large_binary(v)) else 4
    per_entry = pc.binary_length(arr.dictionary).cast(pa.int64())
    total = pc.sum(pc.take(per_entry, arr.indices)).as_py() or 0
    return int(total) + offsets * len(arr)


def _plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return t.value_type
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_plain_type(f.type)) for f in t])
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_plain_type(t.value_type)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_plain_type(t.value_type)), t.list_size)
    if pa.types.is_map(t):
        return pa.map_(t.key_field.with_type(_plain_type(t.key_type)),
                       t.item_field.with_type(_plain_type(t.item_type)))
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_plain_type(t.value_type)))
    return t


def plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with every dictionary column (at any depth) decoded to its value type."""
    schema = pa.schema([f.with_type(_plain_type(f.type)) for f in batch.schema],
                       metadata=batch.schema.metadata)
    if schema.equals(batch.schema):
        return batch
    return pa.record_batch([col.cast(f.type) if col.type != f.type else col
                            for col, f in zip(batch.columns, schema, strict=True)],
                           schema=schema)
