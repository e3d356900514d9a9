"""Where committed Parquet files live: a local directory or any pyarrow filesystem URI.

A fragment version is written to a temporary name and renamed into place, so a file
at its final path is always whole; only then is it committed to state.
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

    def dataset_dir(self, tenant: str, connector: str) -> str:
        return "/".join([self.root, *naming.path_parts(tenant, connector)])

    def fragment_path(self, tenant: str, connector: str, name: str, fingerprint: str) -> str:
        # One file per fragment version: a new fingerprint never overwrites the file
        # the dataset currently points at.
        file = f"{_digest(name)}-{_digest(fingerprint)}.parquet"
        return f"{self.dataset_dir(tenant, connector)}/data/{file}"

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
                    writer = pq.ParquetWriter(self.fs.open_output_stream(tmp), schema,
                                              compression="snappy")
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

    def read(self, paths: list[str]) -> pa.Table | None:
        tables = [pq.read_table(p, filesystem=self.fs) for p in paths if p]
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")
