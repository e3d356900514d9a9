"""An incremental refresh: list, diff against state, read what changed, finalize.

The pieces are separate functions because queue mode runs them in different places
(the list job diffs, fragment jobs read and stage, a finalize job commits the table
version); local mode runs them in a row in one process.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from worker.arrays import string_scalar, strings
from worker.listing import Listing
from worker.models import (
    MAX_SUMMARY_WARNINGS,
    Commit,
    FailedFragment,
    FailureKind,
    Fragment,
    FragmentFailure,
    Progress,
    ReadReport,
    RefreshRecord,
    RefreshSummary,
)
from worker.rejects import ParquetRejects
from worker.sandbox.base import ReadStream, Sandbox, Session
from worker.sink import Output
from worker.spec import Connector, ConnectorSpec
from worker.state.base import StateStore
from worker.state.staged import Staged
from worker.table import crash, ledger
from worker.table.delta import DeltaDataset
from worker.table.schema import declared, for_table, listed_fingerprint, read_key, schema_tag


class Plan(BaseModel):
    """What a refresh reads (as the listing's columns) and deletes."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    listed: int
    reads: Listing
    skipped: int
    deleted: list[str]

    @property
    def to_read(self) -> list[Fragment]:
        return [f for chunk in self.reads.chunks(1024) for f in chunk]


def diff(listed: Listing, committed: Mapping[str, str], tag: str = "",
         full: bool = False) -> Plan:
    """New names and changed read keys are read; names no longer listed leave.
    `committed` maps name -> read key (StateStore.fingerprints()); a listed fragment's
    key is its fingerprint under schema `tag` (worker.table.schema.read_key). `full`
    reads every listed fragment. Computed on the listing's columns; the fragments to
    read stay columns too, and become models a chunk at a time as they are read."""
    names = listed.table.column("name")
    known = strings(committed)
    old = strings(committed.values())
    at = pc.index_in(names, value_set=known)
    keys = pc.binary_join_element_wise(string_scalar(read_key("", tag)),
                                       listed.table.column("fingerprint"), string_scalar(""))
    # New names (no index in state) are changed too: Kleene `or`, since comparing with a
    # missing key gives null.
    changed = pc.or_kleene(pc.is_null(at), pc.not_equal(keys, pc.take(old, at)))
    if full:
        changed = pc.is_valid(names)  # every name is valid (Listing checks): all true
    reads = listed.select(pc.indices_nonzero(changed))
    gone = pc.filter(known, pc.invert(pc.is_in(known, value_set=names))).to_pylist()
    return Plan(listed=len(listed), reads=reads, skipped=len(listed) - len(reads),
                deleted=sorted(gone))


class SessionPool:
    """Warm sessions of one connector: reused while usable, replaced when not."""

    def __init__(self, sandbox: Sandbox, connector: Connector, credentials: str | None) -> None:
        self._sandbox, self._connector, self._credentials = sandbox, connector, credentials
        self._idle: queue.SimpleQueue[Session] = queue.SimpleQueue()
        self._all: list[Session] = []
        self._lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            s = self._idle.get_nowait()
        except queue.Empty:
            s = self._sandbox.open(self._connector, self._credentials)
            with self._lock:
                self._all.append(s)
        try:
            yield s
        finally:
            if s.usable:
                self._idle.put(s)
            else:
                s.close()

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()


def stage_stream(stream: ReadStream, connector: Connector, fragment: Fragment,
                 output: Output, state: StateStore, refresh_id: str) -> Commit:
    """Write one fragment's stream to a new Parquet file in the dataset, then stage it
    for this refresh's table version: durable first, recorded second.

    The rows the read rejected or defaulted are written to the rejects dataset first,
    so a committed fragment never has rejects that were not kept; the replaced
    version's rejects go when the table version is committed (finalize)."""
    spec = connector.spec
    root = output.dataset_dir(spec.tenant, spec.name)
    rel = output.new_fragment_file(fragment.name)
    rows = output.write(f"{root}/{rel}", (for_table(b, fragment.name) for b in stream))
    crash.point("fragment-written")
    report = stream.report or ReadReport(rows=rows)
    rejects = ParquetRejects(output)
    if report.rejects:
        rejects.write(spec.tenant, spec.name, fragment.name, fragment.fingerprint,
                      report.rejects)
    else:  # a version read before (e.g. a retry) may have left some
        rejects.delete(spec.tenant, spec.name, fragment.name, fragment.fingerprint)
    commit = Commit(name=fragment.name, fingerprint=read_key(fragment.fingerprint,
                                                              schema_tag(spec)),
                    path=rel if rows else "", rows=rows,
                    size=output.size(f"{root}/{rel}") if rows else 0,
                    rejected=report.rejected, defaulted=report.defaulted,
                    warnings=report.warnings)
    state.stage(refresh_id, commit)
    crash.point("fragment-staged")
    return commit


class _Feeder:
    """The fragments still to read, shared by the lanes; dry once `stop` is set. Models
    are made from the listing's columns a chunk at a time, as the lanes pull them."""

    CHUNK = 256

    def __init__(self, todo: Listing, stop: threading.Event) -> None:
        self._chunks = todo.chunks(self.CHUNK)
        self._left = len(todo)
        self._ready: collections.deque[Fragment] = collections.deque()
        self._stop = stop
        self._lock = threading.Lock()

    def more(self) -> bool:
        return bool(self._ready) or self._left > 0

    def unread(self, fragment: Fragment) -> None:
        with self._lock:
            self._ready.appendleft(fragment)

    def __iter__(self) -> Iterator[Fragment]:
        return self

    def __next__(self) -> Fragment:
        with self._lock:
            if self._stop.is_set() or not self.more():
                raise StopIteration
            if not self._ready:
                chunk = next(self._chunks)
                self._left -= len(chunk)
                self._ready.extend(chunk)
            return self._ready.popleft()


def dataset(spec: ConnectorSpec, output: Output) -> DeltaDataset:
    return DeltaDataset.of(output, spec.tenant, spec.name)


def recover(spec: ConnectorSpec, output: Output, state: StateStore,
            running: str | None = None) -> list[str]:
    """State in line with the table after any crash (worker.table.ledger.recover);
    the names of the fragments it committed."""
    return ledger.recover(state, dataset(spec, output), output,
                          output.dataset_dir(spec.tenant, spec.name), declared(spec), running)


def finalize(spec: ConnectorSpec, refresh_id: str, plan_deleted: list[str], output: Output,
             state: StateStore, summary: RefreshSummary) -> int:
    """Commit the refresh's table version; returns how many fragments left the dataset.
    Deletions are safe even after a failed read: the listing itself succeeded. Then the
    rejects of versions that left the dataset are removed."""
    table = dataset(spec, output)
    root = output.dataset_dir(spec.tenant, spec.name)
    recover(spec, output, state, running=refresh_id)
    staged = state.staged(refresh_id)  # read once: the commit and its apply reuse it
    before = state.lookup(staged.names + plan_deleted)
    gone = [n for n in plan_deleted if n in before]
    summary.deleted = len(gone)
    try:
        ledger.commit_refresh(state, table, output, root, refresh_id, plan_deleted,
                              declared(spec), summary, staged=staged, committed=before)
    except FragmentFailure as e:
        summary.failed += 1
        summary.failures.append(e.to_model(step="commit"))
        return 0
    # Only names committed before can have rejects to remove, or have left the dataset.
    after = state.lookup(list(before))
    rejects = ParquetRejects(output)
    for name, old in before.items():
        new = after.get(name)
        if new is None or listed_fingerprint(new.fingerprint) != listed_fingerprint(
                old.fingerprint):
            rejects.delete(spec.tenant, spec.name, name, listed_fingerprint(old.fingerprint))
    return len([n for n in gone if n not in after])


def _failed(name: str, exc: BaseException) -> FailedFragment:
    if isinstance(exc, FragmentFailure):
        return exc.to_model(name)
    return FailedFragment(name=name, kind=FailureKind.INFRA,
                          message=f"{type(exc).__name__}: {exc}")


def refresh(connector: Connector, sandbox: Sandbox, state: StateStore, output: Output,
            concurrency: int, on_progress: Callable[[Progress], None] | None = None,
            credentials: str | None = None, full: bool = False) -> RefreshSummary:
    """A whole local refresh. `on_progress(Progress)` drives a progress bar; `full`
    reads every listed fragment again."""
    now = time.time()
    record = RefreshRecord(id=uuid.uuid4().hex[:12], started=now, picked_up=now)
    summary = record.summary
    recovered = recover(connector.spec, output, state)
    state.save_refresh(record)
    interrupted = False
    pool = SessionPool(sandbox, connector, credentials)
    try:
        # The committed fingerprints are read while the sandbox starts and lists: the host
        # only waits on frames then, and for 100,000 fragments the read is ~0.06 s.
        with ThreadPoolExecutor(max_workers=1) as side:
            committed = side.submit(state.fingerprints)
            try:
                with pool.session() as s:
                    listed = s.list()
            except FragmentFailure as e:
                summary.failed = 1
                summary.failures.append(e.to_model(step="listing"))
                return summary
            plan = diff(listed, committed.result(), schema_tag(connector.spec), full)
        summary.listed, summary.skipped = plan.listed, plan.skipped
        summary.recovered = recovered_unread(recovered, listed, plan)
        summary.skipped -= summary.recovered
        total = len(plan.reads)
        if on_progress:
            on_progress(Progress(stage="read", done=0, total=total))
        lock = threading.Lock()
        stop = threading.Event()
        feeder = _Feeder(plan.reads, stop)

        def done(fragment: Fragment, commit: Commit | None, exc: BaseException | None) -> None:
            with lock:
                if exc is not None:
                    summary.failed += 1
                    summary.failures.append(_failed(fragment.name, exc))
                    stop.set()  # no new fragments start; running ones finish
                else:
                    assert commit is not None
                    summary.read += 1
                    summary.rows += commit.rows
                    summary.rejected += commit.rejected
                    summary.defaulted += commit.defaulted
                    room = MAX_SUMMARY_WARNINGS - len(summary.warnings)
                    summary.warnings.extend(commit.warnings[:max(room, 0)])
                if on_progress:
                    on_progress(Progress(stage="read", done=summary.read + summary.failed,
                                         total=total, rows=summary.rows,
                                         rejected=summary.rejected))

        def lane(_: int) -> None:
            # One warm session per lane, fragments pulled from the shared feeder and read
            # pipelined (see FramedSession.read_many); a broken session is replaced.
            while not stop.is_set() and feeder.more():
                try:
                    with pool.session() as s:
                        for fragment, stream in s.read_many(feeder):
                            if stream is None:  # requested, but the session broke first
                                feeder.unread(fragment)
                                continue
                            try:
                                commit = stage_stream(stream, connector, fragment, output,
                                                      state, record.id)
                            except BaseException as e:  # noqa: BLE001 - per fragment
                                done(fragment, None, e)
                            else:
                                done(fragment, commit, None)
                except BaseException as e:  # noqa: BLE001 - the session could not start
                    # Charged to the fragment it would have read, as a task would be.
                    fragment = next(feeder, None)
                    if fragment is not None:
                        done(fragment, None, e)
                    stop.set()

        lanes = max(1, min(concurrency, len(plan.reads)))
        with ThreadPoolExecutor(max_workers=lanes) as lanes_pool:
            futures = [lanes_pool.submit(lane, i) for i in range(lanes)]
            try:
                for f in futures:
                    f.result()  # raises only for a bug in a lane: fragment failures are counted
            except BaseException:
                # Interrupted (SIGTERM, Ctrl-C): no lane takes another fragment, and killing
                # the sessions ends the reads in flight, so the executor's join (and the
                # exit) is not held until the backlog is worked off.
                stop.set()
                pool.close()
                raise
        summary.deleted = finalize(connector.spec, record.id, plan.deleted, output, state,
                                   summary)
        return summary
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM (worker.cli._terminate)
        interrupted = True
        raise
    finally:
        pool.close()
        record.finished = time.time()
        record.status = "failed" if summary.failed else "ok"
        if interrupted:
            _kept(summary, state.staged(record.id))
            record.status = "interrupted"
        state.save_refresh(record)


def recovered_unread(recovered: list[str], listed: Listing, plan: Plan) -> int:
    """Of the listed fragments not read now, those a crashed or interrupted refresh read
    and recovery committed: counted apart from `skipped` (unchanged since a commit)."""
    if not recovered:
        return 0
    names = set(listed.table.column("name").to_pylist())
    reading = set(plan.reads.table.column("name").to_pylist())
    return len({n for n in recovered if n in names and n not in reading})


def _kept(summary: RefreshSummary, staged: Staged) -> None:
    """An interrupted refresh's counts: what it staged (the next refresh commits that).
    The reads the interrupt cut short are not failures: killed sessions fail whatever
    they were reading, and a fragment that did fail is read again next time anyway."""
    summary.failed, summary.failures = 0, []
    summary.read, summary.rows = len(staged), staged.rows
    summary.rejected = int(pc.sum(staged.table.column("rejected")).as_py() or 0)
    summary.defaulted = int(pc.sum(staged.table.column("defaulted")).as_py() or 0)
