"""The rejects dataset: rows a read dropped or altered, kept beside the dataset.

One Parquet file per fragment version, `<dataset>/_rejects/<name>-<fingerprint>.parquet`
(digests), with the columns of `REJECTS_SCHEMA`; read it like the dataset (any Parquet
reader, or `connector show --rejects`). A fragment's file is replaced when the fragment
is read again and removed when the fragment leaves the dataset, like its data file.
`RejectsStore` is the seam: `ParquetRejects` writes these files, `NoRejects` keeps
nothing (for reads that commit nothing).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from worker.models import RejectedRow
from worker.sink import Output

REJECTS_DIR = "_rejects"
REJECTS_SCHEMA = pa.schema([
    ("fragment", pa.string()), ("fingerprint", pa.string()), ("row", pa.int64()),
    ("line", pa.int64()), ("column", pa.string()), ("value", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()), ("action", pa.string()),
])


class RejectsStore(Protocol):
    def write(self, tenant: str, connector: str, fragment: str, fingerprint: str,
              rows: list[RejectedRow]) -> str: ...

    def delete(self, tenant: str, connector: str, fragment: str, fingerprint: str) -> None: ...


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ParquetRejects:
    def __init__(self, output: Output) -> None:
        self.output = output

    def directory(self, tenant: str, connector: str) -> str:
        return f"{self.output.dataset_dir(tenant, connector)}/{REJECTS_DIR}"

    def path(self, tenant: str, connector: str, fragment: str, fingerprint: str) -> str:
        return (f"{self.directory(tenant, connector)}/"
                f"{_digest(fragment)}-{_digest(fingerprint)}.parquet")

    def write(self, tenant: str, connector: str, fragment: str, fingerprint: str,
              rows: list[RejectedRow]) -> str:
        """Write (tmp + rename) this fragment version's rejects; returns the path."""
        path = self.path(tenant, connector, fragment, fingerprint)
        table = pa.Table.from_pylist(
            [{"fragment": fragment, "fingerprint": fingerprint, **r.model_dump()}
             for r in rows], schema=REJECTS_SCHEMA)
        fs = self.output.fs
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp"
        with fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        fs.move(tmp, path)
        return path

    def delete(self, tenant: str, connector: str, fragment: str, fingerprint: str) -> None:
        self.output.delete(self.path(tenant, connector, fragment, fingerprint))

    def read(self, tenant: str, connector: str) -> pa.Table | None:
        """Every fragment's rejects, or None when there are none."""
        from pyarrow.fs import FileSelector, FileType

        sel = FileSelector(self.directory(tenant, connector), allow_not_found=True)
        files = sorted(i.path for i in self.output.fs.get_file_info(sel)
                       if i.type == FileType.File and i.path.endswith(".parquet"))
        if not files:
            return None
        return pa.concat_tables(pq.read_table(p, filesystem=self.output.fs) for p in files)


class NoRejects:
    def write(self, tenant: str, connector: str, fragment: str, fingerprint: str,
              rows: list[RejectedRow]) -> str:
        return ""

    def delete(self, tenant: str, connector: str, fragment: str, fingerprint: str) -> None:
        return None
