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

from worker.models import FailureKind, FragmentFailure


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Output:
    def __init__(self, root: str) -> None:
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.root = base.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def dataset_dir(self, tenant: str, connector: str) -> str:
        return f"{self.root}/{tenant}/{connector}"

    def fragment_path(self, tenant: str, connector: str, name: str, fingerprint: str) -> str:
        # One file per fragment version: a new fingerprint never overwrites the file
        # the dataset currently points at.
        file = f"{_digest(name)}-{_digest(fingerprint)}.parquet"
        return f"{self.dataset_dir(tenant, connector)}/data/{file}"

    def write(self, path: str, batches: Iterable[pa.RecordBatch]) -> int:
        """Stream batches into `path` (tmp + rename); returns rows. Zero rows: no file."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        writer: pq.ParquetWriter | None = None
        rows = 0
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
                writer.write_batch(batch)
                rows += batch.num_rows
            if writer is None:
                return 0
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
