"""JSON Lines, or one top-level JSON array of objects.

JSON Lines go to pyarrow's reader a block at a time (what it is told, and where its
answer is not taken, is `json_fields`); an array is decoded element by element in
Python over a growing buffer (pyarrow reads no arrays), as are the blocks pyarrow's
reader refuses or may have changed. `flatten` turns nested objects into
`parent<separator>child` columns.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from worker.runtime.adapters import BLOCK_SIZE, utf8_chunks
from worker.runtime.formats.errors import ParseError
from worker.runtime.formats.json_fields import Fields
from worker.runtime.formats.rows import rows_to_batch, text_for_mixed
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

_MAX_ELEMENT = 256 << 20  # a JSON array element larger than this is reported as malformed


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
    fields = Fields(spec, rejects)
    batches = (_json_array(rest, batch_rows, as_text, fields.parse_float) if is_array
               else _json_lines(rest, batch_rows, rejects, as_text, fields))
    for batch in batches:
        yield _flatten(batch, spec.separator) if spec.flatten else batch


def _chain(head: list[bytes], tail: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from tail


def _json_lines(chunks: Iterator[bytes], batch_rows: int, rejects: RowRejects | None,
                as_text: bool, fields: Fields) -> Iterator[pa.RecordBatch]:
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
                fields: Fields) -> Iterator[pa.RecordBatch]:
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
            _malformed(i, line, str(e), rejects, first - 1 + len(rows))
            continue
        if not isinstance(value, dict):
            _malformed(i, line, f"expected an object, got {_kind(value)}", rejects,
                       first - 1 + len(rows))
            continue
        rows.append(value)
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows, first, as_text, fmt="json")
            first += len(rows)
            rows = []
    if rows:
        yield rows_to_batch(rows, first, as_text, fmt="json")


def _malformed(line: int, text: bytes, detail: str, rejects: RowRejects | None,
               rows_before: int) -> None:
    if rejects is None or not rejects.skips_malformed:
        raise ParseError(f"json: line {line}: {detail}")
    rejects.malformed(line, text.decode("utf-8", "replace"), detail, rows_before=rows_before)


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

