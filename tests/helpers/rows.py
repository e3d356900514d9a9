"""Parse and conform bytes as the sandbox runtime does, for tests of what a user's rows
become: the rows written and the fragment's rejects log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.runtime.conform import Conformer
from worker.runtime.formats import parse_into
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec, Schema


def chunked(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def read(data: bytes, columns: list[dict[str, Any]] | None = None, chunk: int = 7,
         parser: dict[str, Any] | None = None, custom: Callable[..., Any] | None = None,
         **schema: Any) -> tuple[list[dict[str, Any]], RowRejects]:
    """Parse and conform as the runtime does; the rows written and the rejects log."""
    spec = ParserSpec(**(parser or {}))
    sch = Schema.model_validate({"columns": columns or [], **schema})
    log = RowRejects("f", sch, spec)
    conformer = Conformer(sch, "f", log)
    out: list[dict[str, Any]] = []
    parse_into(ChunkStream(chunked(data, chunk)), spec, custom,
               lambda b: out.extend(conformer.conform(b).to_pylist()), rejects=log)
    conformer.finish()
    return out, log
