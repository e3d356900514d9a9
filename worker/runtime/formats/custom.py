"""The user's own `parser_function(reader, onNext)` in-process: it pushes rows, we batch
them into columns (as the user process does) and build Arrow per column."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from worker.runtime.formats.errors import ParseError
from worker.runtime.formats.rows import rows_to_batch
from worker.runtime.shim import row_batcher
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


class _EmitFailed(BaseException):
    """Carries an error of ours (conform, IPC) out through the user's parser_function.

    A BaseException, so a user's `except Exception` around onNext cannot swallow it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def push_custom(
    stream: ChunkStream, spec: ParserSpec, fn: Callable[..., Any],
    emit: Callable[[pa.RecordBatch], None], batch_rows: int, mixed_as_text: bool = False,
) -> None:
    # The user's function drives; batches go out from inside onNext. No thread, no
    # queue: one loop, as fast as the user's own code can call onNext.
    buffered = io.BufferedReader(stream, buffer_size=1 << 20)
    reader: io.BufferedReader | io.TextIOWrapper
    if spec.reader == "text":
        reader = io.TextIOWrapper(buffered, encoding=spec.encoding, newline=None)
    else:
        reader = buffered
    failed: _EmitFailed | None = None

    def sink(chunk: list[dict[str, Any]], first: int) -> None:
        nonlocal failed
        try:
            batch = rows_to_batch(chunk, first, mixed_as_text)
        except TypeError as e:  # a key that is not a string
            failed = _EmitFailed(ParseError(
                f"custom: rows {first}-{first + len(chunk) - 1}: {e}"))
            raise failed from None
        except ParseError as e:
            failed = _EmitFailed(e)
            raise failed from None
        try:
            emit(batch)
        except BaseException as e:
            failed = _EmitFailed(e)
            raise failed from None

    on_next, flush = row_batcher(batch_rows, sink)

    try:
        fn(reader, on_next)
        if failed is None:
            flush()
    except _EmitFailed as e:
        raise e.error from None
    if failed is not None:  # the user caught it anyway: the fragment still fails
        raise failed.error
