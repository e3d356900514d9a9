"""Delimiter-separated values (CSV, TSV, ...) via pyarrow's CSV readers.

Every column is read as a string (conformance casts them later); an empty field is null.
Declared numeric and bool columns are parsed as their type where that cannot change
what conformance would make of them (see `xsv_typed`); the rest of a fragment, from
the first block that typed parsing cannot take, goes through the streaming reader.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.csv as pacsv

from worker.runtime.adapters import BLOCK_SIZE, Blocks, LineFilter, PacedReads
from worker.runtime.formats.errors import ParseError, reason
from worker.runtime.formats.xsv_typed import TypedRows, typed_columns
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

_ROW = re.compile(r"Row #(\d+)")


class _RaggedRows:
    """pyarrow's invalid-row handler: skips and records rows with the wrong number of
    fields when the policy allows, else remembers the first one for the error."""

    def __init__(self, rejects: RowRejects | None, spec: ParserSpec | None = None) -> None:
        self.rejects = rejects
        self.quote = spec.quote if spec is not None else None
        self.escape = spec.escape if spec is not None else None
        self.lines: LineFilter | None = None  # maps pyarrow's line numbers to the file's
        self.head_lines = 0  # counted lines read before the first record
        self.rows_before = 0  # records before the current reader's first one
        self.header = 0  # records that are the header (numbered as rows by pyarrow)
        self.skipped = 0  # rows skipped by the current reader
        self.first_bad: str | None = None
        self.error: BaseException | None = None

    def __call__(self, row: Any) -> str:
        line = record = None
        if row.number is not None and row.number >= 0:
            record = row.number + self.rows_before
            if self.lines is not None:
                line = self.lines.physical(record + self.head_lines)
        detail = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        numbered = f" (row {record - self.header})" if record is not None else ""
        where = (f"line {line}" if line is not None else "a row") + numbered
        text = row.text
        opened = _unclosed_quote(text, self.quote, self.escape)
        if opened is not None:
            # The row ran to the end of the data inside the quote: its field count only
            # says how many lines it swallowed.
            at = f" on line {line + text.count(chr(10), 0, opened)}" if line is not None else ""
            detail = f"the quote opened{at}{numbered} is never closed"
            where, text = "", text[opened:]
        if self.rejects is None or not self.rejects.skips_malformed:
            self.first_bad = f"xsv: {where}{': ' if where else ''}{detail}: {text[:200]!r}"
            return "error"
        try:
            # Data rows before it: its own number counts the header and earlier
            # malformed rows, which never reach conformance.
            before = (None if record is None
                      else record - self.header - 1 - self.rejects.malformed_rows)
            self.rejects.malformed(line, row.text, detail, rows_before=before)
        except BaseException as e:  # noqa: BLE001 - re-raised once pyarrow unwinds
            self.error = e
            return "error"
        self.skipped += 1
        return "skip"

    def raise_for(self, e: pa.ArrowInvalid) -> NoReturn:
        """Raises what a reader's ArrowInvalid means: the policy's own error, the first
        row that could not be skipped, or the library's reason (its row numbers counted
        from the file's first record, as a reader over the whole file counts them)."""
        if self.error is not None:
            raise self.error from None
        if self.first_bad is not None:
            raise ParseError(self.first_bad) from None
        why = reason(e)
        if self.rows_before:
            why = _ROW.sub(lambda m: f"Row #{int(m.group(1)) + self.rows_before}", why)
        raise ParseError(f"xsv: {why}") from e


def _unclosed_quote(text: str, quote: str | None, escape: str | None) -> int | None:
    """Where in a row's text the quote opens that is still open at its end, if any
    (a doubled quote inside a quoted value does not close it, nor an escaped one)."""
    if quote is None or quote not in text:
        return None
    opened: int | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if opened is not None and escape is not None and c == escape:
            i += 2
            continue
        if c == quote:
            if opened is None:
                opened = i
            elif escape is None and text.startswith(quote, i + 1):
                i += 1  # "" inside a quoted value
            else:
                opened = None
        i += 1
    return opened


def parse_xsv(stream: ChunkStream, spec: ParserSpec, batch_rows: int,
              rejects: RowRejects | None = None) -> Iterator[pa.RecordBatch]:
    """The fragment's rows. A newline inside quotes fails it unless
    `newlines_in_values` allows them (then a note counts them): a stray quote would
    otherwise take the lines after it into one value, the field counts still right.
    The line filter sees every byte before the reader parses it, so the check runs
    before each batch goes out, and first when the reader fails (the quote explains
    the rows that went wrong after it)."""
    marker = spec.comment_marker
    quoting = spec.quote is not None  # else a newline always ends a row
    lines = LineFilter(stream, None if marker is None else marker.encode(spec.encoding),
                       spec.quote.encode(spec.encoding) if quoting else None,
                       spec.escape.encode(spec.encoding) if quoting and spec.escape else None)
    try:
        for batch in _parse_xsv(stream, spec, rejects, lines):
            _check_quoted(spec, lines)
            yield batch
    except Exception:
        if stream.error is None:
            _check_quoted(spec, lines)
        raise
    _check_quoted(spec, lines)
    if lines.quoted_rows and rejects is not None:
        rejects.note(f"fragment {rejects.fragment!r}: {lines.quoted_rows} row(s) hold "
                     f"newlines inside quotes, {lines.quoted_rows + lines.quoted_newlines} "
                     f"lines in all; the first starts on line {lines.quoted_line}")


def _check_quoted(spec: ParserSpec, lines: LineFilter) -> None:
    if lines.quoted_line is not None and not spec.newlines_in_values:
        raise ParseError(f"xsv: line {lines.quoted_line}: the quote opened on this line "
                         "runs onto the next one; set parser.newlines_in_values: true if "
                         "values may hold newlines")


def _parse_xsv(stream: ChunkStream, spec: ParserSpec, rejects: RowRejects | None,
               lines: LineFilter) -> Iterator[pa.RecordBatch]:
    # Without a comment marker LineFilter passes the user's chunks through whole.
    source: io.RawIOBase | io.BufferedIOBase = (
        lines if spec.comment_marker is None else io.BufferedReader(lines, buffer_size=1 << 20))
    ragged = _RaggedRows(rejects, spec)
    ragged.lines = lines
    ragged.header = 1 if spec.header else 0
    parse_args: dict[str, Any] = {
        "delimiter": spec.delimiter,
        "quote_char": spec.quote if spec.quote is not None else False,
        "escape_char": spec.escape if spec.escape is not None else False,
        "double_quote": spec.escape is None,
        "newlines_in_values": spec.quote is not None and spec.newlines_in_values,
    }
    parse_opts = pacsv.ParseOptions(**parse_args, invalid_row_handler=ragged)

    to_skip = spec.header_line_count

    # pyarrow has no "every column is a string" switch, so learn the column names
    # from the first line and pass them as explicit string column types.
    head = b""
    eof = False
    search = 0
    names: list[str] | None = None
    line = b""
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

    column_names = None if spec.header else names
    feed = Blocks(head, source)
    typed = typed_columns(spec, rejects, names, line if spec.header else b"")
    if typed:
        rows = TypedRows(spec, names, typed, parse_args, ragged)
        # the header is record 1 of pyarrow's numbering; the body follows it
        ragged.rows_before = 1 if spec.header else 0
        rest = yield from rows.parse(feed, len(line) if spec.header else 0)
        if rest is None:
            return
        # from here on, rows it cannot cut safely: the streaming reader takes them as
        # its first block, as it would have had it read the whole fragment
        data, at_start = rest
        feed = Blocks(data, feed, whole_head=True)
        if at_start:
            ragged.rows_before = 0
        else:
            column_names = names

    reader: pacsv.CSVStreamingReader | None = None
    paced = PacedReads(feed)
    try:
        reader = pacsv.open_csv(
            paced,
            read_options=pacsv.ReadOptions(
                encoding=spec.encoding,
                block_size=BLOCK_SIZE,
                # with a header pyarrow reads it itself (quoted newlines and all)
                column_names=column_names,
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
            paced.took()
            if batch.num_rows:
                yield batch
    except pa.ArrowInvalid as e:
        if stream.error is not None:
            raise
        ragged.raise_for(e)
    finally:
        # The reader holds our Python row handler and may still be reading ahead: stop
        # it now, not at interpreter exit (where pyarrow then aborts the process).
        paced.close()
        if reader is not None:
            reader.close()
            reader = None
        paced.settle()
