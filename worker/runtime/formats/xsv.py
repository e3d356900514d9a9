"""Delimiter-separated values (CSV, TSV, ...) via pyarrow's streaming CSV reader.

Every column is read as a string (conformance casts them later); an empty field is null.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from worker.runtime.adapters import BLOCK_SIZE, CommentFilter, Prefixed
from worker.runtime.formats.errors import ParseError, reason
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


def parse_xsv(stream: ChunkStream, spec: ParserSpec, batch_rows: int) -> Iterator[pa.RecordBatch]:
    raw: io.RawIOBase = stream
    if spec.comment is not None:
        raw = CommentFilter(stream, spec.comment.encode(spec.encoding))
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
            io.BufferedReader(Prefixed(head, buffered), buffer_size=BLOCK_SIZE),
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
        raise ParseError(f"xsv: {reason(e)} (after data row {rows})") from e

