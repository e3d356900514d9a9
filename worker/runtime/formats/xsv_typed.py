"""CSV blocks parsed with the declared types, falling back to text block by block.

Conformance casts text to the declared types; for numeric and bool columns pyarrow's
CSV reader can do that while it parses, for less CPU than text + cast
(`convert.parse_types` says which columns, and why the values come out the same).
A conversion error in the streaming reader would end the stream, so here the stream is
cut into blocks of whole rows and each block is read on its own: with the declared
types first, and when that fails (a value the reader refuses, a row with the wrong
number of fields) again with every column as text, the way the streaming reader reads
it, so rejects, line numbers and errors are those of the all-text path.

Blocks are cut at newlines, which end a row only outside quotes. The first block this
path cannot cut safely ends it, and the streaming reader reads the rest, counting rows
on from there: a block holding a quote character, one followed by a row that starts
with a byte-order mark (a reader drops one at the start of its input), a row longer
than a block, or rows ended by a lone "\r".
"""

from __future__ import annotations

import codecs
from collections.abc import Generator
from typing import Any, NoReturn, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv

from worker.runtime.adapters import BLOCK_SIZE, Blocks
from worker.runtime.convert import CSV_FALSE, CSV_TRUE, parse_types
from worker.runtime.rejects import RowRejects
from worker.spec import ParserSpec

BOM = codecs.BOM_UTF8


class RowHandler(Protocol):
    """The streaming path's invalid-row handler, with its numbering state."""

    rows_before: int
    skipped: int

    def __call__(self, row: Any) -> str: ...
    def raise_for(self, e: pa.ArrowInvalid) -> NoReturn: ...


class _Count:
    """Invalid-row handler of a typed attempt: counts, decides nothing."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, row: Any) -> str:
        self.rows += 1
        return "skip"


def typed_columns(spec: ParserSpec, rejects: RowRejects | None, names: list[str],
                  header: bytes) -> dict[str, pa.DataType]:
    """The columns to parse typed, or none when this fragment cannot use the path."""
    if (rejects is None or spec.escape is not None or len(header) > BLOCK_SIZE // 2
            or (spec.header and (not header.endswith(b"\n") or b"\r" in header[:-2]))
            or codecs.lookup(spec.encoding).name != "utf-8" or len(set(names)) != len(names)):
        return {}
    present = set(names)
    return {n: t for n, t in parse_types(rejects.schema).items() if n in present}


class TypedRows:
    """One fragment's rows after the header, block by block, typed where possible."""

    def __init__(self, spec: ParserSpec, names: list[str], typed: dict[str, pa.DataType],
                 parse_args: dict[str, Any], ragged: RowHandler) -> None:
        self._names = names
        self._quote = spec.quote.encode() if spec.quote is not None else None
        self._ragged = ragged
        self._parse_args = parse_args
        text = {n: pa.string() for n in names}
        nulls = {"strings_can_be_null": True, "quoted_strings_can_be_null": True,
                 "null_values": [""]}
        self._typed = pacsv.ConvertOptions(column_types={**text, **typed}, **nulls,
                                           true_values=CSV_TRUE, false_values=CSV_FALSE)
        self._text = pacsv.ConvertOptions(column_types=text, **nulls)

    def parse(self, feed: Blocks, skip: int,
              ) -> Generator[pa.RecordBatch, None, tuple[bytes, bool] | None]:
        """Yields batches of the rows after the first `skip` bytes of `feed` (the header,
        if any). Returns None at the end of the stream, or, when the streaming reader
        must take over, the bytes not parsed (the rest of `feed` follows them; the
        reader takes them as its first block) and whether they are the stream's start
        (header included: nothing was parsed). `ragged.rows_before` counts the
        records parsed.

        Blocks are cut where the streaming reader would cut them (it reads
        `BLOCK_SIZE` bytes at a time from the same `feed` and parses up to the last
        row end; the rest goes with the next block), so a fragment with both a bad row
        and a bad value fails with the same one of them.
        """
        pending = b""
        start = skip
        first = True
        eof = False
        while True:
            data = feed.read(BLOCK_SIZE, after=pending) if not eof else pending
            eof = eof or len(data) - len(pending) < BLOCK_SIZE
            if len(data) <= start:
                return None
            cut = len(data) if eof else data.rfind(b"\n", start) + 1
            if cut <= start:  # a row longer than a block, or rows ended by "\r" alone
                return (data, True) if first else (data[start:], False)
            after = data[cut:cut + len(BOM)]
            if ((self._quote is not None and data.find(self._quote, start, cut) >= 0)
                    or (start > 0 and data.startswith(BOM, start))
                    or (after and BOM.startswith(after))):
                # a reader drops a byte-order mark at the start of its input, so a row
                # that starts with one must not start a block (it is data mid-file)
                return (data, True) if first else (data[start:], False)
            first = False
            if cut > start:
                yield from self._block(pa.py_buffer(data).slice(start, cut - start))
            pending, start = data[cut:], 0
            if eof and not pending:
                return None

    def _block(self, buf: pa.Buffer) -> Generator[pa.RecordBatch, None, None]:
        count = _Count()
        try:
            table = self._read(buf, self._typed, count)
            ok = count.rows == 0
        except pa.ArrowInvalid:
            ok = False
        if not ok:
            ragged = self._ragged
            ragged.skipped = 0
            try:
                table = self._read(buf, self._text, ragged)
            except pa.ArrowInvalid as e:
                ragged.raise_for(e)
            self._ragged.rows_before += ragged.skipped
        self._ragged.rows_before += table.num_rows
        for batch in table.to_batches():
            if batch.num_rows:
                yield batch

    def _read(self, buf: pa.Buffer, convert: pacsv.ConvertOptions, handler: Any) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(buf),
            read_options=pacsv.ReadOptions(
                column_names=self._names, use_threads=False,  # line numbers, as streaming
                block_size=max(buf.size, 1 << 20) + 1),  # one batch per block
            parse_options=pacsv.ParseOptions(**self._parse_args, invalid_row_handler=handler),
            convert_options=convert,
        )
