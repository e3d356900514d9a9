"""The Delta table of one dataset: versions committed from files already written.

Fragment files are written by whoever read them (the local pool, or queue workers on
other machines); a version is then one `create_write_transaction` of add actions for
the new files and remove actions for the replaced and deleted ones, so a reader sees
the table before the refresh or after it, never a mix. The commit carries the refresh
id and counts (`custom_metadata`) and a `txn` action (app id `connector-host`) whose
version counts this project's commits: after a crash it tells whether a commit landed
(worker.table.ledger).

A schema change is committed in overwrite mode: append mode keeps the table's schema,
overwrite replaces it together with the files, still in one version.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import timedelta

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from deltalake.schema import Schema as DeltaSchema
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)
from pydantic import BaseModel, Field

from worker.models import Commit
from worker.sink import Output
from worker.state.staged import DataFile

APP_ID = "connector-host"
META_PREFIX = "connector."


class VersionInfo(BaseModel):
    """One table version as `connector history` shows it."""

    version: int
    timestamp: float  # seconds since the epoch
    operation: str = ""
    refresh_id: str = ""
    counts: dict[str, int] = Field(default_factory=dict)


def same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    """Equal as Delta stores them (Arrow details Delta does not keep are ignored)."""
    return DeltaSchema.from_arrow(a).to_json() == DeltaSchema.from_arrow(b).to_json()


class DeltaDataset:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None,
                 filesystem: pafs.FileSystem | None = None) -> None:
        """`filesystem`: the dataset folder as a pyarrow filesystem, for reads. Without
        one, delta-rs reads through a Python filesystem handler that can abort the
        interpreter at exit ("terminate called without an active exception", about 1 run
        in 15 here); pyarrow's own filesystems do not."""
        self.uri = uri
        self.storage_options = storage_options
        self.filesystem = filesystem

    @classmethod
    def of(cls, output: Output, tenant: str, connector: str) -> DeltaDataset:
        return cls(output.dataset_uri(tenant, connector), output.storage_options,
                   pafs.SubTreeFileSystem(output.dataset_dir(tenant, connector), output.fs))

    def table(self, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)

    def seq(self, table: DeltaTable | None = None) -> int:
        """How many commits this project has made to the table (its txn version)."""
        table = table or self.table()
        if table is None:
            return 0
        return table.transaction_version(APP_ID) or 0

    def schema(self, table: DeltaTable | None = None) -> pa.Schema | None:
        table = table or self.table()
        return None if table is None else pa.schema(table.schema().to_arrow())

    def commit(self, table: DeltaTable | None, *, adds: list[DataFile], removes: list[Commit],
               schema: pa.Schema, overwrite: bool, seq: int,
               metadata: dict[str, str | int]) -> None:
        """One version on top of `table` (None: create it): `adds` joined, `removes`
        left (overwrite: every current file left, and the schema replaced). `seq`
        becomes the table's txn version. Loading a table replays its log, so the caller
        passes the one it already loaded."""
        now = int(time.time() * 1000)
        add_actions = [AddAction(c.path, c.size, {}, now, True,
                                 json.dumps({"numRecords": c.rows})) for c in adds if c.path]
        props = CommitProperties(
            custom_metadata={f"{META_PREFIX}{k}": v for k, v in metadata.items()},
            app_transactions=[Transaction(APP_ID, seq, now)])
        if table is None:
            create_table_with_add_actions(self.uri, DeltaSchema.from_arrow(schema), add_actions,
                                          mode="error", storage_options=self.storage_options,
                                          commit_properties=props)
            return
        actions: list[AddAction | RemoveAction] = list(add_actions)
        if not overwrite:
            actions += [RemoveAction(c.path, True, now, c.size) for c in removes if c.path]
        table.create_write_transaction(actions, "overwrite" if overwrite else "append",
                                       schema, commit_properties=props)

    def history(self, limit: int | None = None) -> list[VersionInfo]:
        table = self.table()
        if table is None:
            return []
        out = []
        for h in table.history(limit):
            ours = {k[len(META_PREFIX):]: v for k, v in h.items() if k.startswith(META_PREFIX)}
            refresh_id = str(ours.pop("refresh_id", ""))
            out.append(VersionInfo(
                version=h["version"], timestamp=h.get("timestamp", 0) / 1000,
                operation=h.get("operation", ""), refresh_id=refresh_id,
                counts={k: int(v) for k, v in ours.items() if isinstance(v, int)}))
        return out

    def owner(self, table: DeltaTable | None = None, versions: int = 100) -> str | None:
        """The state store (`owner` of worker.state.base.StateStore) that made the
        table's latest version among the last `versions` that says (vacuum's and other
        tools' versions do not); None for no table, or none that says."""
        table = table or self.table()
        if table is None:
            return None
        for h in table.history(versions):
            if isinstance(owner := h.get(f"{META_PREFIX}owner"), str):
                return owner
        return None

    def read(self, version: int | None = None) -> pa.Table | None:
        table = self.table(version)
        if table is None:
            return None
        try:
            return table.to_pyarrow_table(filesystem=self.filesystem)
        except pa.ArrowInvalid as e:
            if "storage type" not in str(e):
                raise
        # A column tagged with an Arrow extension its stored type cannot carry (a UUID
        # column older versions committed as binary tagged `arrow.uuid`): read it as
        # what it is stored as, the tag kept in the field's metadata (see
        # worker.table.render). This changes what the process reads from then on, so
        # it happens only when the plain read has already failed.
        with contextlib.suppress(pa.ArrowException, KeyError, ValueError):
            pa.unregister_extension_type("arrow.uuid")
        return table.to_pyarrow_table(filesystem=self.filesystem)

    def vacuum(self, retention: timedelta, dry_run: bool = False,
               orphans: bool = True) -> list[str]:
        """Delete files no version within `retention` needs; with `orphans`, also files
        no version ever named (a crashed refresh's) once older than `retention`."""
        table = self.table()
        if table is None:
            return []
        return table.vacuum(retention_hours=int(retention.total_seconds() // 3600),
                            dry_run=dry_run, enforce_retention_duration=False, full=orphans)
