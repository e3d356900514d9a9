"""Where fragment files live: a local directory or a pyarrow filesystem URI (s3://...).

Each (tenant, connector) has a dataset folder, `<root>/<tenant>/<connector>`, holding
its Delta table: fragment files under `data/` and the log under `_delta_log/`. Paths
kept in state and in the table are relative to that folder, so a folder that is
copied or moved is still a whole dataset.

A fragment version is written to a temporary name and renamed into place, so a file
at its final path is always whole; only then is it staged, and it joins the dataset
when its refresh's table version is committed (worker.table.ledger).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worker import naming
from worker.models import FailureKind, FragmentFailure


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Row groups: written once this many rows or bytes of batches are gathered.
ROW_GROUP_ROWS = 1 << 17
ROW_GROUP_BYTES = 32 << 20
# A column's dictionary falls back to plain encoding once its page reaches this size.
# Parquet's default (1 MiB) lets a column of unique values (ids, amounts, free text)
# hash every row of a 128 Ki-row group into a dictionary that is then thrown away:
# about a third of the write time of such a table (bench/README.md). Columns of few
# values keep their dictionary.
DICTIONARY_PAGE_BYTES = 256 << 10


def _write_group(writer: pq.ParquetWriter, batches: list[pa.RecordBatch],
                 schema: pa.Schema) -> None:
    table = pa.Table.from_batches(batches, schema=schema)
    writer.write_table(table, row_group_size=max(table.num_rows, 1))


class Output:
    def __init__(self, root: str) -> None:
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.root = base.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

        self.scheme = root.split("://", 1)[0] if "://" in root else ""
        # delta-rs reads object-store settings (AWS_ENDPOINT_URL, AWS_REGION, keys...)
        # from the environment itself; nothing to pass for a local folder.
        self.storage_options: dict[str, str] | None = None

    def dataset_dir(self, tenant: str, connector: str) -> str:
        """The dataset folder as a path of this filesystem."""
        return "/".join([self.root, *naming.path_parts(tenant, connector)])

    def dataset_uri(self, tenant: str, connector: str) -> str:
        """The dataset folder as Delta Lake (and other engines) name it."""
        path = self.dataset_dir(tenant, connector)
        return f"{self.scheme}://{path}" if self.scheme else path

    @staticmethod
    def new_fragment_file(name: str) -> str:
        """A fresh relative path for one written version of a fragment. Never reused:
        a re-read (a new fingerprint, a new schema, `--full`) never overwrites a file
        some table version still points at."""
        return f"data/{_digest(name)}-{uuid.uuid4().hex[:16]}.parquet"

    def size(self, path: str) -> int:
        return self.fs.get_file_info(path).size or 0

    def write(self, path: str, batches: Iterable[pa.RecordBatch]) -> int:
        """Stream batches into `path` (tmp + rename); returns rows. Zero rows: no file.

        Batches are gathered into row groups of up to ROW_GROUP_ROWS rows or
        ROW_GROUP_BYTES bytes (whichever comes first) before they are written: a row
        group per small batch costs encoding and metadata time, and this bounds the
        memory held at once.
        """
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        writer: pq.ParquetWriter | None = None
        rows = 0
        pending: list[pa.RecordBatch] = []
        pending_rows = pending_bytes = 0
        try:
            for batch in batches:
                if writer is None:
                    schema = batch.schema
                    writer = pq.ParquetWriter(
                        self.fs.open_output_stream(tmp), schema, compression="snappy",
                        dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES)
                elif batch.schema != schema:
                    try:
                        batch = batch.cast(schema)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                        raise FragmentFailure(
                            f"rows changed shape mid-fragment ({batch.schema} vs {schema}): {e}; "
                            "declare a schema in connector.yaml", FailureKind.DATA) from None
                if not batch.num_rows:
                    continue
                pending.append(batch)
                pending_rows += batch.num_rows
                pending_bytes += batch.nbytes
                rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= ROW_GROUP_BYTES:
                    _write_group(writer, pending, schema)
                    pending, pending_rows, pending_bytes = [], 0, 0
            if writer is None:
                return 0
            if pending:
                _write_group(writer, pending, schema)
                pending = []
            writer.close()
            writer = None
            self.fs.move(tmp, path)
            return rows
        finally:
            if writer is not None:
                writer.close()
            self.delete(tmp)

    def delete(self, path: str) -> None:
        if not path:
            return
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_file(path)

