"""State and table together: a refresh's one table version, and recovery after a crash.

The order of a commit, and what a crash after each step leaves:

1. fragment files written, then staged in state      -> staged, never in the table
2. `PendingCommit` recorded (its `seq`)              -> pending, table below `seq`
3. table version committed (txn version = `seq`)     -> pending, table at `seq`
4. staged versions applied to state, pending cleared -> done

`recover` runs before a refresh lists and before a finalize commits: a pending commit
that reached the table is applied (step 4 is idempotent); one that did not, and staged
versions of refreshes that never got to step 2, are committed then, as the crashed
refresh's version. The table's log decides; state follows it. Nothing is lost and
nothing is read twice (staged files are whole and were read successfully), nothing is
duplicated (the table holds one file per fragment).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from worker.column_types import MAX_COLUMNS
from worker.models import Commit, FailureKind, FragmentFailure, PendingCommit, RefreshSummary
from worker.settings import settings
from worker.sink import Output
from worker.state.base import StateStore
from worker.state.staged import DataFile, Staged
from worker.table import crash
from worker.table.delta import DeltaDataset, same_schema
from worker.table.owner import check_commit
from worker.table.schema import column_count, storable_problem


class SchemaConflict(FragmentFailure):
    def __init__(self, message: str) -> None:
        super().__init__(message, FailureKind.DATA)


def _apply(state: StateStore, pending: PendingCommit, staged: Staged | None = None) -> None:
    """Step 4: the staged versions into state, a batch per transaction (a crash between
    batches leaves `pending` recorded, and `recover` applies them all again: committing
    a version twice is a no-op)."""
    staged = staged if staged is not None else state.staged(pending.refresh_id)
    for batch in staged.batches(settings().state_batch):
        state.commit_many(batch)
        crash.point("state-batch-applied")
    state.remove(pending.deleted)
    state.drop_staged(pending.refresh_id)
    state.set_pending(None)
    crash.point("state-applied")


def _drop(state: StateStore, output: Output, root: str, refresh_id: str,
          staged: Staged | None = None) -> None:
    staged = staged if staged is not None else state.staged(refresh_id)
    for f in staged.files():
        output.delete(f"{root}/{f.path}")
    state.drop_staged(refresh_id)


def _exists(output: Output, path: str) -> bool:
    return output.fs.get_file_info(path).type != pafs.FileType.NotFound


def recover(state: StateStore, table: DeltaDataset, output: Output, root: str,
            declared: pa.Schema | None, running: str | None = None) -> list[str]:
    """Bring state in line with the table after a crash. `running`: the refresh now
    under way (queue mode), whose staged versions are live, not leftovers. Returns the
    names of the fragments committed here (a refresh reports them as recovered).

    A leftover refresh's staged fragments were read successfully and their files are
    durable, so they are committed now, as that refresh's version, rather than read
    again: read_bytes never runs twice for a fragment that succeeded."""
    recovered: list[str] = []
    pending = state.pending()
    if pending is not None:  # only then is the table's log read: a refresh starts cheaply
        if table.seq() >= pending.seq:
            recovered += state.staged(pending.refresh_id).names
            _apply(state, pending)
            pending = None
        else:
            state.set_pending(None)
    for refresh_id in state.staged_refreshes():
        if refresh_id == running:
            continue
        staged = state.staged(refresh_id)
        missing = {f.path for f in staged.files() if not _exists(output, f"{root}/{f.path}")}
        if missing:
            # A file went missing (removed by hand): its fragment is read again instead.
            present = [c for batch in staged.batches(len(staged)) for c in batch
                       if c.path not in missing]
            state.drop_staged(refresh_id)
            for c in present:
                state.stage(refresh_id, c)
            staged = state.staged(refresh_id)
        deleted = pending.deleted if pending and pending.refresh_id == refresh_id else []
        summary = RefreshSummary(read=len(staged), rows=staged.rows)
        try:
            commit_refresh(state, table, output, root, refresh_id, deleted, declared, summary,
                           staged=staged)
        except SchemaConflict:
            _drop(state, output, root, refresh_id, staged)
        else:
            recovered += staged.names
    return recovered


def _data_schema(output: Output, root: str, adds: list[DataFile],
                 current: pa.Schema | None) -> pa.Schema | None:
    """Undeclared schema: the table's columns widened by the new files' (in order), one
    file at a time, so fragments that are each narrow enough but together too wide are
    refused before their union is held."""
    schema = current
    for c in adds:
        more = pq.read_schema(f"{root}/{c.path}", filesystem=output.fs)
        try:
            schema = more if schema is None else pa.unify_schemas(
                [schema, more], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SchemaConflict(f"fragments disagree on column types ({e}); declare a "
                                 "schema in connector.yaml") from None
        width = column_count(schema)
        if width > MAX_COLUMNS:
            raise SchemaConflict(f"fragments cannot share the Delta table: together they "
                                 f"have {width} columns (nested fields counted), over the "
                                 f"{MAX_COLUMNS} a table may have")
    if schema is None:
        return None
    # Each fragment was storable alone; together they may not be (`a` and `A`).
    problem = storable_problem(schema)
    if problem is not None:
        raise SchemaConflict(f"fragments cannot share the Delta table: {problem}")
    return schema


def commit_refresh(state: StateStore, table: DeltaDataset, output: Output, root: str,
                   refresh_id: str, deleted: list[str], declared: pa.Schema | None,
                   summary: RefreshSummary, staged: Staged | None = None,
                   committed: dict[str, Commit] | None = None) -> int | None:
    """Commit what `refresh_id` staged, and drop `deleted`, as one table version.
    Returns the new version, or None when the table did not change. `staged` and
    `committed` (the committed versions of the staged and deleted names): what the
    caller already read, so that a commit reads each once.

    A refresh that changes the schema replaces every file; if any fragment failed, it
    commits nothing (the table keeps its schema and rows, and the next refresh tries
    again) rather than leave rows of two schemas."""
    staged = staged if staged is not None else state.staged(refresh_id)
    names = staged.names
    if committed is None:
        committed = state.lookup(names + deleted)
    replaced = [n for n in names if n in committed]
    deleted = [n for n in deleted if n in committed and n not in set(replaced)]
    adds = staged.files()
    removes = [committed[n] for n in replaced + deleted if committed[n].path]
    current = table.table()
    if current is not None:
        check_commit(table, current, state.owner)  # the other mode may have committed
    current_schema = table.schema(current) if current is not None else None
    schema = declared if declared is not None else _data_schema(output, root, adds,
                                                                 current_schema)
    changed = (current_schema is not None and schema is not None
               and not same_schema(current_schema, schema))
    kept: list[DataFile] = []
    if changed:
        leaving = set(names) | set(deleted)
        kept = [DataFile(c.path, c.size, c.rows) for n, c in state.committed().items()
                if c.path and n not in leaving]
        if declared is not None and (summary.failed or kept):
            _drop(state, output, root, refresh_id, staged)
            return None
    if current is None and (schema is None or (summary.failed and not adds)):
        # Nothing with a column yet (no declared schema, no rows), or a first refresh
        # that failed without a row to add: state only. An empty version 0 would stand
        # for a dataset nothing was read into; the failed fragments are read next time.
        _apply(state, PendingCommit(refresh_id=refresh_id, seq=0, deleted=deleted), staged)
        return None
    if current is not None and not adds and not removes and not changed:
        _apply(state, PendingCommit(refresh_id=refresh_id, seq=0, deleted=deleted), staged)
        return None
    assert schema is not None
    pending = PendingCommit(refresh_id=refresh_id, seq=table.seq(current) + 1, deleted=deleted)
    state.set_pending(pending)
    crash.point("pending-recorded")
    table.commit(current, adds=adds + kept, removes=removes, schema=schema, overwrite=changed,
                 seq=pending.seq, metadata={
                     "refresh_id": refresh_id, "owner": state.owner, "listed": summary.listed,
                     "read": summary.read, "deleted": len(deleted), "failed": summary.failed,
                     "rows": summary.rows, "files_added": len(adds),
                     "files_removed": len(removes)})
    crash.point("table-committed")
    _apply(state, pending, staged)
    return (current.version() + 1) if current is not None else 0
