"""Which parser serves which `parser.format`, and the two ways to drive one.

Built-in formats are pulled: a `PullParser` yields record batches. A custom
`parser_function` pushes rows instead, so `parse_into` (which serves every format)
hands batches to a callback as soon as they are full.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pyarrow as pa

from worker.runtime.formats.errors import translate_errors
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


class PullParser(Protocol):
    def __call__(self, stream: ChunkStream, spec: ParserSpec, batch_rows: int,
                 rejects: RowRejects | None) -> Iterator[pa.RecordBatch]: ...


# format -> (module, function): a parser and its libraries (fastavro, pyarrow.parquet,
# pyarrow.json) are imported when a connector uses that format, not at every start-up.
BUILT_IN: dict[str, tuple[str, str]] = {
    "xsv": ("worker.runtime.formats.xsv", "parse_xsv"),
    "json": ("worker.runtime.formats.json", "parse_json"),
    "avro": ("worker.runtime.formats.avro", "parse_avro"),
    "parquet": ("worker.runtime.formats.parquet", "parse_parquet"),
}


def built_in(fmt: str) -> PullParser | None:
    where = BUILT_IN.get(fmt)
    if where is None:
        return None
    fn: PullParser = getattr(importlib.import_module(where[0]), where[1])
    return fn


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
    fn = built_in(parser.format)
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
    from worker.runtime.formats.custom import push_custom
    from worker.runtime.formats.rows import text_for_mixed

    with translate_errors(stream, "custom"):
        push_custom(stream, parser, custom, emit, batch_rows,
                    mixed_as_text=text_for_mixed(rejects))
