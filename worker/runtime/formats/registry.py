"""Which parser serves which `parser.format`, and the two ways to drive one.

Built-in formats are pulled: a `PullParser` yields record batches. A custom
`parser_function` pushes rows instead, so `parse_into` (which serves every format)
hands batches to a callback as soon as they are full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from worker.runtime.formats.avro import parse_avro
from worker.runtime.formats.custom import push_custom
from worker.runtime.formats.errors import translate_errors
from worker.runtime.formats.json import parse_json
from worker.runtime.formats.parquet import parse_parquet
from worker.runtime.formats.xsv import parse_xsv
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


class PullParser(Protocol):
    def __call__(self, stream: ChunkStream, spec: ParserSpec, batch_rows: int,
                 rejects: RowRejects | None) -> Iterator[pa.RecordBatch]: ...


BUILT_IN: dict[str, PullParser] = {
    "xsv": parse_xsv,
    "json": parse_json,
    "avro": parse_avro,
    "parquet": parse_parquet,
}


def parse(
    stream: ChunkStream,
    parser: ParserSpec,
    custom: Callable[..., Any] | None = None,
    batch_rows: int = 65536,
    rejects: RowRejects | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield record batches parsed from `stream` by a built-in format.

    Rows the parser cannot split into fields go to `rejects` when its policy skips
    them; without one (or when the policy fails) they raise ParseError."""
    fn = BUILT_IN.get(parser.format)
    if fn is None:
        raise ValueError(f"parse() serves built-in formats, not {parser.format!r}: "
                         "use parse_into")
    with translate_errors(stream, parser.format):
        yield from fn(stream, parser, batch_rows, rejects)


def parse_into(
    stream: ChunkStream,
    parser: ParserSpec,
    custom: Callable[..., Any] | None,
    emit: Callable[[pa.RecordBatch], None],
    batch_rows: int = 65536,
    rejects: RowRejects | None = None,
) -> None:
    """Parse `stream` and hand each record batch to `emit` as soon as it is full."""
    if parser.format != "custom":
        for batch in parse(stream, parser, None, batch_rows, rejects):
            emit(batch)
        return
    if custom is None:
        raise ValueError("parser.format is 'custom' but no parser_function was given")
    with translate_errors(stream, "custom"):
        push_custom(stream, parser, custom, emit, batch_rows)
