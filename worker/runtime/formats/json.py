"""JSON Lines, or one top-level JSON array of objects.

JSON Lines go to pyarrow's reader a block at a time; an array is decoded element by
element in Python over a growing buffer (pyarrow reads no arrays). `flatten` turns
nested objects into `parent<separator>child` columns.

Values are what the text says. pyarrow's reader decides alone only where that holds:
- it reads an integer past int64 (or past 2^53 beside floats) as the nearest float, so a
  block with a float of magnitude 2^53 or more written with 16 digits or more (not
  `1e20`, a float as written) is read line by line instead (exact
  Python ints: kept in a decimal or string column, rejected naming them in an int64
  one, a fragment error naming them without a declared type);
- it reads a number as a float: a declared decimal column is read as its decimal
  (exact, or refused and read line by line with `Decimal` numbers);
- it turns strings that look like dates into timestamps (an offset converted away, a
  date made a midnight): such fields are read again as the strings they are, and from
  then on for the rest of the fragment. Only a declared type converts text.
"""

from __future__ import annotations

import codecs
import decimal
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from worker.column_types import arrow_type
from worker.runtime.adapters import BLOCK_SIZE, utf8_chunks
from worker.runtime.formats.errors import ParseError
from worker.runtime.formats.rows import rows_to_batch, text_for_mixed
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

_MAX_ELEMENT = 256 << 20  # a JSON array element larger than this is reported as malformed
_EXACT_FLOAT = 2.0 ** 53  # every integer up to this magnitude is exact as a float64
# A number written with 16 digits or more before any point or exponent: one a float64
# may not hold (1e20 may: written so, it is a float to begin with).
_LONG_NUMBER = re.compile(rb"[:\[,]\s*-?\d{16}")
Path = tuple[str, ...]


class _Fields:
    """What pyarrow's JSON reader is told about a fragment's fields, and what it may not
    decide alone (see the module docstring)."""

    PROBE = 64 << 10  # the first block's head, read once to learn its timestamp fields

    def __init__(self, spec: ParserSpec, rejects: RowRejects | None) -> None:
        columns = rejects.schema.columns if rejects is not None else []
        decimals = {c.source_name: c.type for c in columns if c.type.startswith("decimal")}
        # top-level decimal columns: pyarrow reads them as their decimal, exactly
        self.decimals = {n: arrow_type(t) for n, t in decimals.items()
                         if not (spec.flatten and spec.separator in n)}
        # flattened decimal columns it reads as floats: those blocks go line by line
        self.flat_decimals = set(decimals) - set(self.decimals)
        self.separator = spec.separator if spec.flatten else None
        # top-level field -> the type that reads, as text, what pyarrow took for timestamps
        self.text: dict[str, pa.DataType] = {}
        self.parse_float: Callable[[str], Any] | None = decimal.Decimal if decimals else None
        self.order: dict[str, int] = {}  # fields in first-seen order (explicit ones lead)
        self.probed = False
        self.schema = self._schema()

    def _schema(self) -> pa.Schema | None:
        fields = {**self.decimals, **self.text}
        return pa.schema(list(fields.items())) if fields else None

    def _read(self, blob: bytes) -> pa.Table | None:
        opts = (None if self.schema is None else
                pajson.ParseOptions(explicit_schema=self.schema,
                                    unexpected_field_behavior="infer"))
        try:
            return pajson.read_json(
                io.BytesIO(blob), parse_options=opts,
                read_options=pajson.ReadOptions(block_size=max(len(blob) + 1, 1 << 20)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # duplicate keys, a value changing type, a bad line, ...

    def _learn(self, table: pa.Table) -> bool:
        """Remembers `table`'s field order and its timestamp fields (to read as text);
        whether there were new ones."""
        for name in table.column_names:
            self.order.setdefault(name, len(self.order))
        found = False
        for f in table.schema:
            text = _as_text(f.type)
            if text is not None:
                old = self.text.get(f.name)
                self.text[f.name] = text if old is None else _merge(old, text)
                found = True
        if found:
            self.schema = self._schema()
        return found

    def read(self, blob: bytes) -> pa.Table | None:
        """The block as pyarrow reads it, or None when it must be read line by line."""
        if not self.probed:
            # Learn the first rows' timestamp fields from a small head, not the whole
            # block read twice.
            self.probed = True
            cut = blob.rfind(b"\n", 0, self.PROBE) + 1
            head = self._read(blob[:cut]) if 0 < cut < len(blob) else None
            if head is not None:
                self._learn(head)
        while True:
            table = self._read(blob)
            if table is None:
                return None
            if not self._learn(table):
                break
        if self.schema is not None:
            table = self._present(table, blob)
            rank = self.order
            names = sorted(table.column_names, key=lambda n: rank.get(n, len(rank)))
            if names != table.column_names:
                table = table.select(names)
        if (_float_past_exact(table) and _LONG_NUMBER.search(blob) is not None) or (
                self.flat_decimals and self.separator is not None
                and any(self.separator.join(p) in self.flat_decimals
                        and pa.types.is_floating(t) for p, t in _leaves(table.schema))):
            return None
        return table

    def _present(self, table: pa.Table, blob: bytes) -> pa.Table:
        """`table` without the fields the explicit schema added but the block lacks (a
        declared column no row carries is then reported as missing, as before)."""
        for name in self.schema.names if self.schema is not None else []:
            col = table.column(name)
            if (col.null_count == len(col)
                    and json.dumps(name, ensure_ascii=False).encode() not in blob):
                table = table.drop_columns([name])
        return table


def _as_text(t: pa.DataType) -> pa.DataType | None:
    """The part of type `t` that holds timestamps, with string for each; None if none.
    (Given to the reader, it pins only those fields; the rest it still infers.)"""
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_struct(t):
        kids = [(f.name, k) for f in t if (k := _as_text(f.type)) is not None]
        return pa.struct(kids) if kids else None
    if pa.types.is_list(t):
        inner = _as_text(t.value_type)
        return pa.list_(inner) if inner is not None else None
    return None


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Two `_as_text` types of one field: the fields of both."""
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        kids = {f.name: f.type for f in a}
        for f in b:
            kids[f.name] = _merge(kids[f.name], f.type) if f.name in kids else f.type
        return pa.struct(list(kids.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge(a.value_type, b.value_type))
    return b


def _leaves(schema: pa.Schema) -> Iterator[tuple[Path, pa.DataType]]:
    """(path, type) of every field that is not a struct, structs' children included."""
    def walk(path: Path, t: pa.DataType) -> Iterator[tuple[Path, pa.DataType]]:
        if pa.types.is_struct(t):
            for f in t:
                yield from walk((*path, f.name), f.type)
        else:
            yield path, t

    for f in schema:
        yield from walk((f.name,), f.type)


def _float_past_exact(table: pa.Table) -> bool:
    """Whether a float value (at any depth) is 2^53 or more in magnitude: an integer
    there may have been rounded to it."""
    def arrays(arr: pa.Array) -> Iterator[pa.Array]:
        t = arr.type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                yield from arrays(arr.field(i))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            yield from arrays(arr.flatten())
        elif pa.types.is_floating(t):
            yield arr

    for col in table.columns:
        if not _has_float(col.type):
            continue
        for chunk in col.chunks:
            for arr in arrays(chunk):
                top = pc.max(pc.abs(arr)).as_py()
                if top is not None and top >= _EXACT_FLOAT:
                    return True
    return False


def _has_float(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_float(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_float(t.value_type)
    return False


def parse_json(
    stream: ChunkStream, spec: ParserSpec, batch_rows: int, rejects: RowRejects | None = None
) -> Iterator[pa.RecordBatch]:
    chunks = utf8_chunks(stream, spec.encoding)
    first = b""
    for chunk in chunks:
        first = chunk.lstrip()
        if first:
            break
    if not first:
        return
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:].lstrip()
    rest = _chain([first], chunks)
    is_array = first[:1] == b"["
    as_text = text_for_mixed(rejects)
    fields = _Fields(spec, rejects)
    batches = (_json_array(rest, batch_rows, as_text, fields.parse_float) if is_array
               else _json_lines(rest, batch_rows, rejects, as_text, fields))
    for batch in batches:
        yield _flatten(batch, spec.separator) if spec.flatten else batch


def _chain(head: list[bytes], tail: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from tail


def _json_lines(chunks: Iterator[bytes], batch_rows: int, rejects: RowRejects | None,
                as_text: bool, fields: _Fields) -> Iterator[pa.RecordBatch]:
    carry = b""
    line_no = 0  # lines before the current block
    rows = 0  # rows yielded before it: row numbers in errors count rows, not lines
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        block, carry = data[:cut], data[cut:]
        if block:
            pending.append(block)
            size += len(block)
        if size >= BLOCK_SIZE:
            blob = b"".join(pending)
            pending, size = [], 0
            for batch in _json_block(blob, line_no, rows + 1, batch_rows, rejects, as_text, fields):
                rows += batch.num_rows
                yield batch
            line_no += blob.count(b"\n")
    pending.append(carry)
    blob = b"".join(pending)
    if blob.strip():
        yield from _json_block(blob, line_no, rows + 1, batch_rows, rejects, as_text, fields)


# A line that does not start with '{': pyarrow's reader crashes the process on some
# (a first line of `null`) and turns others into rows of nulls, so it never sees them.
_NOT_AN_OBJECT = re.compile(rb"(?:^|\n)[ \t\r]*[^{ \t\r\n]")


def _objects_only(blob: bytes) -> bool:
    """Whether every line of `blob` starts with '{' (blank ones aside). Two counts
    decide the common case (each line starts with it, no blank line); the pattern, a
    scan in Python's regex engine (~40% of a block's time), only the rest."""
    body = blob.rstrip()
    if body[:1] == b"{" and body.count(b"\n") == body.count(b"\n{"):
        return True
    return _NOT_AN_OBJECT.search(blob) is None


def _json_block(blob: bytes, line_no: int, first: int, batch_rows: int,
                rejects: RowRejects | None, as_text: bool,
                fields: _Fields) -> Iterator[pa.RecordBatch]:
    if not blob.strip():
        return
    if _objects_only(blob):
        table = fields.read(blob)
        if table is not None:
            yield from table.combine_chunks().to_batches()
            return
    yield from _json_lines_slow(blob, line_no, first, batch_rows, rejects, as_text,
                                fields.parse_float)


def _json_lines_slow(blob: bytes, line_no: int, first: int, batch_rows: int,
                     rejects: RowRejects | None, as_text: bool,
                     parse_float: Callable[[str], Any] | None) -> Iterator[pa.RecordBatch]:
    """Line by line with json.loads: a repeated key keeps its last value, a line that is
    not an object is malformed, and the rows become columns as custom-parser rows do
    (`rows_to_batch`: a column whose values change type is text for declared columns to
    cast, else an error naming it). `first` numbers the block's first row; numbers with
    a fraction are `parse_float`'s (Decimal, for declared decimal columns)."""
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(blob.split(b"\n"), start=line_no + 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_float=parse_float)
        except ValueError as e:
            _malformed(i, line, str(e), rejects)
            continue
        if not isinstance(value, dict):
            _malformed(i, line, f"expected an object, got {_kind(value)}", rejects)
            continue
        rows.append(value)
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows, first, as_text, fmt="json")
            first += len(rows)
            rows = []
    if rows:
        yield rows_to_batch(rows, first, as_text, fmt="json")


def _malformed(line: int, text: bytes, detail: str, rejects: RowRejects | None) -> None:
    if rejects is None or not rejects.skips_malformed:
        raise ParseError(f"json: line {line}: {detail}")
    rejects.malformed(line, text.decode("utf-8", "replace"), detail)


def _kind(value: Any) -> str:
    kinds = {type(None): "null", bool: "boolean", int: "number", float: "number",
             str: "string", list: "array"}
    return kinds.get(type(value), type(value).__name__)


def _json_array(chunks: Iterator[bytes], batch_rows: int, as_text: bool,
                parse_float: Callable[[str], Any] | None) -> Iterator[pa.RecordBatch]:
    """A top-level JSON array, decoded element by element over a growing buffer."""
    decoder = json.JSONDecoder(parse_float=parse_float)
    text_decoder = codecs.getincrementaldecoder("utf-8")()
    buf = ""
    pos = 0
    eof = False
    started = False
    rows: list[dict[str, Any]] = []
    element = 0

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = next(chunks, None)
        if chunk is None:
            eof = True
            buf = buf[pos:] + text_decoder.decode(b"", final=True)
        else:
            buf = buf[pos:] + text_decoder.decode(chunk)
        pos = 0
        return True

    def skip_ws() -> None:
        nonlocal pos
        n = len(buf)
        while pos < n and buf[pos] in " \t\r\n":
            pos += 1

    while True:
        skip_ws()
        if pos >= len(buf):
            if not more():
                raise ParseError("json: unexpected end of input inside the top-level array")
            continue
        ch = buf[pos]
        if not started:
            started = True
            pos += 1  # the '['
            continue
        if ch == "]":
            pos += 1
            skip_ws()
            while pos >= len(buf) and more():
                skip_ws()
            if pos < len(buf):
                raise ParseError(f"json: unexpected data after the top-level array: "
                                 f"{buf[pos:pos + 20]!r}")
            break
        if ch == "," and element > 0:
            pos += 1
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as e:
            if len(buf) - pos < _MAX_ELEMENT and more():
                continue  # the element may simply be incomplete
            raise ParseError(f"json: array element {element + 1}: {e.msg}") from e
        if not isinstance(value, dict):
            raise ParseError(f"json: array element {element + 1}: expected an object, "
                             f"got {_kind(value)}")
        pos = end
        element += 1
        rows.append(value)
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows, element - len(rows) + 1, as_text, fmt="json")
            rows = []
        skip_ws()
        while pos >= len(buf) and more():
            skip_ws()
        if pos < len(buf) and buf[pos] not in ",]":
            raise ParseError(f"json: array element {element}: expected ',' or ']', got "
                             f"{buf[pos:pos + 20]!r}")
    if rows:
        yield rows_to_batch(rows, element - len(rows) + 1, as_text, fmt="json")


def _flatten(batch: pa.RecordBatch, sep: str) -> pa.RecordBatch:
    """Struct columns -> one column per leaf, named parent<sep>child (recursively)."""
    if not any(pa.types.is_struct(f.type) for f in batch.schema):
        return batch
    names: list[str] = []
    arrays: list[pa.Array] = []

    def add(name: str, arr: pa.Array) -> None:
        if pa.types.is_struct(arr.type):
            for field, child in zip(arr.type, arr.flatten(), strict=True):
                add(f"{name}{sep}{field.name}", child)
        else:
            names.append(name)
            arrays.append(arr)

    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        add(name, col)
    return pa.RecordBatch.from_arrays(arrays, names=names)

