"""Built-in parsers: one fragment's byte stream -> Arrow record batches.

Runs inside the sandbox. Every parser streams: a fragment is never held in memory
whole (Parquet, which needs seeks, is spooled to a temporary file instead). Formats
pyarrow can parse (CSV, JSON Lines, Parquet) never loop per row in Python.

Errors: malformed bytes raise `ParseError` naming the format and the library's reason.
If the user's `read_bytes` raised (or yielded a non-bytes chunk), `stream.error` is set
and that exception is raised instead: the user's own traceback wins over whatever
the parser made of the truncated stream.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

BLOCK_SIZE = 4 << 20  # bytes per CSV/JSON block handed to pyarrow
_MAX_ELEMENT = 256 << 20  # a JSON array element larger than this is reported as malformed


class ParseError(Exception):
    """The fragment's bytes are not valid for the declared format."""


# --------------------------------------------------------------------------- entry


def parse(
    stream: ChunkStream,
    parser: ParserSpec,
    custom: Callable[..., Any] | None = None,
    batch_rows: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Yield record batches parsed from `stream` by a built-in format.

    A custom `parser_function` pushes rows rather than being pulled: use `parse_into`,
    which serves every format."""
    fmt = parser.format
    inner: Iterator[pa.RecordBatch]
    if fmt == "xsv":
        inner = _parse_xsv(stream, parser)
    elif fmt == "json":
        inner = _parse_json(stream, parser, batch_rows)
    elif fmt == "avro":
        inner = _parse_avro(stream, batch_rows)
    elif fmt == "parquet":
        inner = _parse_parquet(stream, batch_rows)
    else:
        raise ValueError(f"parse() serves built-in formats, not {fmt!r}: use parse_into")
    with _errors(stream, fmt):
        yield from inner


def parse_into(
    stream: ChunkStream,
    parser: ParserSpec,
    custom: Callable[..., Any] | None,
    emit: Callable[[pa.RecordBatch], None],
    batch_rows: int = 65536,
) -> None:
    """Parse `stream` and hand each record batch to `emit` as soon as it is full."""
    if parser.format != "custom":
        for batch in parse(stream, parser, None, batch_rows):
            emit(batch)
        return
    if custom is None:
        raise ValueError("parser.format is 'custom' but no parser_function was given")
    with _errors(stream, "custom"):
        _push_custom(stream, parser, custom, emit, batch_rows)


@contextlib.contextmanager
def _errors(stream: ChunkStream, fmt: str) -> Iterator[None]:
    """Translate library errors into ParseError; let the user's own exception win."""
    try:
        yield
    except ParseError:
        if stream.error is not None:
            raise stream.error from None
        raise
    except Exception as e:
        if stream.error is not None:
            if e is stream.error:
                raise
            raise stream.error from None
        if fmt == "custom":
            raise  # the user's parser_function raised: keep its exception object
        raise ParseError(f"{fmt}: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    for prefix in ("CSV parse error: ", "JSON parse error: "):
        msg = msg.removeprefix(prefix)
    return msg


# --------------------------------------------------------------------------- xsv


class _CommentFilter(io.RawIOBase):
    """Drops lines that start with `comment`, chunk by chunk (bytes level)."""

    def __init__(self, raw: io.RawIOBase, comment: bytes) -> None:
        self._raw = raw
        self._comment = comment
        self._nl_comment = b"\n" + comment
        self._carry = b""  # an incomplete last line
        self._out = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _filter(self, data: bytes) -> bytes:
        if not data.startswith(self._comment) and self._nl_comment not in data:
            return data
        c = self._comment
        return b"".join(line for line in data.splitlines(keepends=True)
                        if not line.startswith(c))

    def _fill(self) -> bool:
        while not self._out:
            if self._eof:
                return False
            chunk = self._raw.read(BLOCK_SIZE)
            if not chunk:
                self._eof = True
                data, self._carry = self._carry, b""
            else:
                data = self._carry + chunk
                cut = data.rfind(b"\n") + 1
                data, self._carry = data[:cut], data[cut:]
            self._out = memoryview(self._filter(data))
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._fill():
            return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


class _Prefixed(io.RawIOBase):
    """`head` bytes followed by the rest of a raw stream."""

    def __init__(self, head: bytes, rest: io.BufferedIOBase) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read1(len(b))
        n = len(data)
        b[:n] = data
        return n


def _parse_xsv(stream: ChunkStream, spec: ParserSpec) -> Iterator[pa.RecordBatch]:
    raw: io.RawIOBase = stream
    if spec.comment is not None:
        raw = _CommentFilter(stream, spec.comment.encode(spec.encoding))
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    parse_opts = pacsv.ParseOptions(
        delimiter=spec.delimiter,
        quote_char=spec.quote if spec.quote is not None else False,
        escape_char=spec.escape if spec.escape is not None else False,
        double_quote=spec.escape is None,
        newlines_in_values=spec.quote is not None,
    )

    # pyarrow has no "every column is a string" switch, so learn the column names
    # from the first line and pass them as explicit string column types.
    head = b""
    eof = False
    search = 0
    names: list[str] | None = None
    while names is None:
        cut = head.find(b"\n", search)
        if cut < 0 and not eof:
            more = buffered.read1(1 << 16)
            eof = not more
            head += more
            continue
        line = head if cut < 0 else head[: cut + 1]
        if not line.strip():
            if cut < 0:
                return  # empty stream (or only blank lines): no batches
            head, search = head[cut + 1:], 0  # pyarrow skips blank lines too
            continue
        if (cut >= 0 and spec.quote is not None and spec.escape is None
                and line.count(spec.quote.encode(spec.encoding)) % 2):
            search = cut + 1  # a quoted newline inside the first row
            continue
        first = pacsv.read_csv(
            io.BytesIO(line),
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding, autogenerate_column_names=not spec.header
            ),
            parse_options=parse_opts,
        )
        names = first.column_names
    if not spec.header:
        names = [f"f{i}" for i in range(len(names))]

    rows = 0
    try:
        reader = pacsv.open_csv(
            io.BufferedReader(_Prefixed(head, buffered), buffer_size=BLOCK_SIZE),
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding,
                block_size=BLOCK_SIZE,
                # with a header pyarrow reads it itself (quoted newlines and all)
                column_names=None if spec.header else names,
                use_threads=True,
            ),
            parse_options=parse_opts,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
        for batch in reader:
            rows += batch.num_rows
            if batch.num_rows:
                yield batch
    except pa.ArrowInvalid as e:
        if stream.error is not None:
            raise
        raise ParseError(f"xsv: {_reason(e)} (after data row {rows})") from e


# --------------------------------------------------------------------------- json


def _utf8_chunks(stream: io.RawIOBase, encoding: str) -> Iterator[bytes]:
    """The stream's bytes as UTF-8 (pyarrow's JSON reader takes nothing else)."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    decoder = None if utf8 else codecs.getincrementaldecoder(encoding)()
    while True:
        chunk = stream.read(BLOCK_SIZE)
        if decoder is None:
            if not chunk:
                return
            yield chunk
            continue
        if not chunk:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail.encode("utf-8")
            return
        yield decoder.decode(chunk).encode("utf-8")


def _parse_json(
    stream: ChunkStream, spec: ParserSpec, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    chunks = _utf8_chunks(stream, spec.encoding)
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
    batches = _json_array(rest, batch_rows) if is_array else _json_lines(rest)
    for batch in batches:
        yield _flatten(batch, spec.separator) if spec.flatten else batch


def _chain(head: list[bytes], tail: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from tail


def _json_lines(chunks: Iterator[bytes]) -> Iterator[pa.RecordBatch]:
    carry = b""
    line_no = 0  # lines before the current block
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
            yield from _json_block(blob, line_no)
            line_no += blob.count(b"\n")
    pending.append(carry)
    blob = b"".join(pending)
    if blob.strip():
        yield from _json_block(blob, line_no)


def _json_block(blob: bytes, line_no: int) -> Iterator[pa.RecordBatch]:
    if not blob.strip():
        return
    try:
        table = pajson.read_json(
            io.BytesIO(blob),
            read_options=pajson.ReadOptions(block_size=max(len(blob) + 1, 1 << 20)),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ParseError(_json_where(blob, line_no, e)) from e
    yield from table.combine_chunks().to_batches()


def _json_where(blob: bytes, line_no: int, e: Exception) -> str:
    """Slow path after a failure: find the offending line for the message."""
    for i, line in enumerate(blob.split(b"\n"), start=line_no + 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as je:
            return f"json: line {i}: {je}"
        if not isinstance(value, dict):
            return f"json: line {i}: expected an object, got {type(value).__name__}"
    return f"json: {_reason(e)}"


def _json_array(chunks: Iterator[bytes], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A top-level JSON array, decoded element by element over a growing buffer."""
    decoder = json.JSONDecoder()
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
                             f"got {type(value).__name__}")
        pos = end
        element += 1
        rows.append(value)
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows)
            rows = []
        skip_ws()
        while pos >= len(buf) and more():
            skip_ws()
        if pos < len(buf) and buf[pos] not in ",]":
            raise ParseError(f"json: array element {element}: expected ',' or ']', got "
                             f"{buf[pos:pos + 20]!r}")
    if rows:
        yield rows_to_batch(rows)


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


# --------------------------------------------------------------------------- rows


def rows_to_batch(
    rows: list[dict[str, Any]], schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """Python dicts -> a batch; columns are the union of keys in first-seen order."""
    if schema is not None:
        try:
            return pa.RecordBatch.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            pass  # fall back to inference
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
            raise ParseError(f"column {k!r}: values of mixed or unsupported types: {e}") from e
    return pa.RecordBatch.from_arrays(arrays, names=list(keys))


# --------------------------------------------------------------------------- avro


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
        raise ValueError("union")
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


def _parse_avro(stream: ChunkStream, batch_rows: int) -> Iterator[pa.RecordBatch]:
    buffered = io.BufferedReader(stream, buffer_size=1 << 20)
    if not buffered.peek(1):
        return
    reader = fastavro.reader(buffered)
    schema: pa.Schema | None = None
    try:
        top = reader.writer_schema
        if isinstance(top, dict) and top.get("type") == "record":
            schema = pa.schema(
                [pa.field(f["name"], _avro_type(f["type"])) for f in top["fields"]]
            )
    except (ValueError, KeyError, TypeError):
        schema = None
    rows: list[dict[str, Any]] = []
    for rec in reader:
        rows.append(rec if isinstance(rec, dict) else {"value": rec})
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows, schema)
            rows = []
    if rows:
        yield rows_to_batch(rows, schema)


# --------------------------------------------------------------------------- parquet


def _parse_parquet(stream: ChunkStream, batch_rows: int) -> Iterator[pa.RecordBatch]:
    fd, path = tempfile.mkstemp(prefix="fragment-", suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, BLOCK_SIZE)
        if os.path.getsize(path) == 0:
            return
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_rows)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------- custom


class _EmitFailed(BaseException):
    """Carries an error of ours (conform, IPC) out through the user's parser_function.

    A BaseException, so a user's `except Exception` around onNext cannot swallow it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _push_custom(
    stream: ChunkStream, spec: ParserSpec, fn: Callable[..., Any],
    emit: Callable[[pa.RecordBatch], None], batch_rows: int,
) -> None:
    # The user's function drives; batches go out from inside onNext. No thread, no
    # queue: one loop, as fast as the user's own code can call onNext.
    buffered = io.BufferedReader(stream, buffer_size=1 << 20)
    reader: io.BufferedReader | io.TextIOWrapper
    if spec.reader == "text":
        reader = io.TextIOWrapper(buffered, encoding=spec.encoding, newline=None)
    else:
        reader = buffered
    rows: list[dict[str, Any]] = []
    append = rows.append
    emitted = 0  # rows handed on so far
    failed: _EmitFailed | None = None

    def flush() -> None:
        nonlocal emitted, failed
        first = emitted + 1
        chunk = rows[:]
        rows.clear()
        emitted += len(chunk)
        try:
            batch = rows_to_batch(chunk)
        except ParseError as e:
            failed = _EmitFailed(ParseError(
                f"custom: rows {first}-{first + len(chunk) - 1}: {e}"))
            raise failed from None
        try:
            emit(batch)
        except BaseException as e:
            failed = _EmitFailed(e)
            raise failed from None

    def on_next(row: Any) -> None:
        # Called once per row: kept to a type check, an append and a length check.
        if type(row) is not dict and not isinstance(row, dict):
            raise TypeError(f"onNext expects a dict, got {type(row).__name__} "
                            f"(row {emitted + len(rows) + 1})")
        append(row)
        if len(rows) >= batch_rows:
            flush()

    try:
        fn(reader, on_next)
        if failed is None and rows:
            flush()
    except _EmitFailed as e:
        raise e.error from None
    if failed is not None:  # the user caught it anyway: the fragment still fails
        raise failed.error
