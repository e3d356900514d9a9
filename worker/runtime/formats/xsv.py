"""Delimiter-separated values (CSV, TSV, ...) via pyarrow's streaming CSV reader.

Every column is read as a string (conformance casts them later); an empty field is null.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from worker.runtime.adapters import BLOCK_SIZE, Blocks, LineFilter
from worker.runtime.formats.errors import ParseError, reason
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


class _RaggedRows:
    """pyarrow's invalid-row handler: skips and records rows with the wrong number of
    fields when the policy allows, else remembers the first one for the error."""

    def __init__(self, rejects: RowRejects | None) -> None:
        self.rejects = rejects
        self.lines: LineFilter | None = None  # maps pyarrow's line numbers to the file's
        self.head_lines = 0  # counted lines read before pyarrow's first line
        self.first_bad: str | None = None
        self.error: BaseException | None = None

    def __call__(self, row: Any) -> str:
        line = None
        if row.number is not None and row.number >= 0 and self.lines is not None:
            line = self.lines.physical(row.number + self.head_lines)
        detail = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        if self.rejects is None or not self.rejects.skips_malformed:
            where = f"line {line}" if line is not None else "a row"
            self.first_bad = f"xsv: {where}: {detail}: {row.text[:200]!r}"
            return "error"
        try:
            self.rejects.malformed(line, row.text, detail)
        except BaseException as e:  # noqa: BLE001 - re-raised once pyarrow unwinds
            self.error = e
            return "error"
        return "skip"


def parse_xsv(stream: ChunkStream, spec: ParserSpec, batch_rows: int,
              rejects: RowRejects | None = None) -> Iterator[pa.RecordBatch]:
    marker = spec.comment_marker
    lines = LineFilter(stream, None if marker is None else marker.encode(spec.encoding))
    # Without a comment marker LineFilter passes the user's chunks through whole.
    source: io.RawIOBase | io.BufferedIOBase = (
        lines if marker is None else io.BufferedReader(lines, buffer_size=1 << 20))
    ragged = _RaggedRows(rejects)
    ragged.lines = lines
    parse_opts = pacsv.ParseOptions(
        delimiter=spec.delimiter,
        quote_char=spec.quote if spec.quote is not None else False,
        escape_char=spec.escape if spec.escape is not None else False,
        double_quote=spec.escape is None,
        newlines_in_values=spec.quote is not None,
        invalid_row_handler=ragged,
    )

    to_skip = spec.header_line_count

    # pyarrow has no "every column is a string" switch, so learn the column names
    # from the first line and pass them as explicit string column types.
    head = b""
    eof = False
    search = 0
    names: list[str] | None = None
    while names is None:
        cut = head.find(b"\n", search)
        if cut < 0 and not eof:
            more = source.read(1 << 16)
            eof = not more
            head += more
            continue
        line = head if cut < 0 else head[: cut + 1]
        if to_skip or not line.strip():
            if cut < 0:
                return  # empty stream (or only skipped lines): no batches
            # header_line_count lines go unread; pyarrow skips blank lines too
            head, search = head[cut + 1:], 0
            if line not in (b"\n", b"\r\n"):
                ragged.head_lines += 1  # a line LineFilter counted
            to_skip = max(0, to_skip - 1)
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

    reader: pacsv.CSVStreamingReader | None = None
    try:
        reader = pacsv.open_csv(
            Blocks(head, source),
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding,
                block_size=BLOCK_SIZE,
                # with a header pyarrow reads it itself (quoted newlines and all)
                column_names=None if spec.header else names,
                # single-threaded: pyarrow knows line numbers only then (rejects and
                # errors name them), and the sandbox gives a fragment one CPU anyway
                use_threads=False,
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
            if batch.num_rows:
                yield batch
    except pa.ArrowInvalid as e:
        if stream.error is not None:
            raise
        if ragged.error is not None:
            raise ragged.error from None
        if ragged.first_bad is not None:
            raise ParseError(ragged.first_bad) from None
        raise ParseError(f"xsv: {reason(e)}") from e
    finally:
        # The reader holds our Python row handler and may still be reading ahead: stop
        # it now, not at interpreter exit (where pyarrow then aborts the process).
        if reader is not None:
            reader.close()
            reader = None

