"""Parquet: needs seeks, so the fragment is spooled to a temporary file first."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from worker.runtime.adapters import BLOCK_SIZE
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


def parse_parquet(stream: ChunkStream, spec: ParserSpec, batch_rows: int,
                  rejects: RowRejects | None = None) -> Iterator[pa.RecordBatch]:
    fd, path = tempfile.mkstemp(prefix="fragment-", suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, BLOCK_SIZE)
        if os.path.getsize(path) == 0:
            return
        # int96 (Spark, Impala) as microseconds: nanoseconds wrap dates after 2262
        pf = pq.ParquetFile(path, coerce_int96_timestamp_unit="us")
        yield from pf.iter_batches(batch_size=batch_rows)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

