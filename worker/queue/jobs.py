"""The RQ jobs of a queued refresh: list, read (a batch of fragments), finalize.

list_job    opens a session, lists, diffs against RedisState, records the plan and
            enqueues read jobs (or finalizes at once when nothing changed).
read_job    reads each still-pending fragment of its batch: already staged by this
            refresh (a retry after a crash) -> counted, not read again; else Parquet
            (tmp + rename) into the dataset, then staged for the refresh's version.
            User-code failures are recorded and stop the refresh (not-yet-started
            fragments stay unread); infrastructure failures raise, so RQ retries the
            job with backoff.
finalize    commits the refresh's one table version (staged files added, replaced and
            deleted ones removed), closes the refresh record, releases the lock and
            re-arms the schedule. Runs once, when the last fragment is accounted.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from worker import ceilings
from worker.bundle_cache import touch
from worker.errors import ConnectorError
from worker.models import FailedFragment, FailureKind, Fragment, FragmentFailure, RefreshRecord
from worker.queue import enqueue
from worker.queue.admission import TenantNotServed
from worker.queue.context import WorkerContext, current
from worker.queue.sessions import SessionKey
from worker.queue.tracker import Outcome, Tracker
from worker.refresh import diff, finalize, recover, recovered_unread, stage_stream
from worker.registry import get_deployment, materialize, open_credentials
from worker.sandbox.base import Session
from worker.sandbox.process import unenforced_network
from worker.settings import settings
from worker.spec import Connector
from worker.state import tenant_fragments
from worker.state.redis import RedisState
from worker.table.owner import check_queue
from worker.table.schema import read_key, schema_tag

log = logging.getLogger(__name__)

EXCERPT = 8000  # characters of traceback and of log kept per failed fragment
# Loaded connector versions, least recently used first; at most
# CONNECTOR_LOADED_CONNECTORS (an evicted one is loaded again when a job needs it).
_connectors: OrderedDict[SessionKey, Connector] = OrderedDict()


def _connector(ctx: WorkerContext, key: SessionKey) -> Connector:
    connector = _connectors.get(key)
    # Its folder may have left the disk cache (worker.bundle_cache) since it was loaded.
    if connector is None or not connector.path.is_dir():
        try:
            connector = materialize(ctx.redis, key.tenant, key.connector, key.bundle)
        except ConnectorError as e:
            # A damaged or unsafe bundle fails the fragment (or listing) it was loaded
            # for; its kind decides whether a retry can help.
            raise FragmentFailure.of(e) from None
        _connectors[key] = connector
        while len(_connectors) > settings().loaded_connectors:
            _connectors.popitem(last=False)
    else:
        touch(connector.path)
    _connectors.move_to_end(key)
    return connector


def _admit(ctx: WorkerContext, tenant: str) -> None:
    """FragmentFailure (permanent) when this worker does not run `tenant`'s code."""
    try:
        ctx.tenants.check(tenant)
    except TenantNotServed as e:
        raise FragmentFailure.of(e) from None


def _session(ctx: WorkerContext, key: SessionKey) -> Session:
    """A warm session of exactly this tenant's connector version."""
    _admit(ctx, key.tenant)

    def opener() -> Session:
        try:
            connector = _connector(ctx, key)
            # The deployed spec against today's ceilings: they may have been lowered.
            ceilings.enforce(connector, ceilings.tenant_ceilings(ctx.redis, key.tenant))
            creds = open_credentials(get_deployment(ctx.redis, key.tenant, key.connector))
        except ConnectorError as e:
            # Setup (a bad bundle, spec or credentials reference): its kind says whether
            # a retry can help; for most it cannot until someone fixes the deployment.
            raise FragmentFailure.of(e) from None
        if ctx.sandbox.name == "process" and (note := unenforced_network(connector)):
            log.warning(note)
        return ctx.sandbox.open(connector, creds)

    return ctx.sessions.get(key, opener)


def _close(redis: Redis, output_ctx: WorkerContext | None, tenant: str, connector: str,
           refresh_id: str, listing_failure: FailedFragment | None = None) -> None:
    """Close the refresh record (idempotent: only a running refresh is closed)."""
    state = RedisState(redis, tenant, connector)
    record = state.refresh(refresh_id)
    tr = Tracker(redis, tenant, connector, refresh_id)
    if record is None or record.status != "running":
        tr.release()
        return
    s = record.summary
    if listing_failure is not None:
        s.failed, s.failures = 1, [listing_failure]
    else:
        c = tr.counts()
        c.apply(s)
        s.failures = tr.failures()
        if output_ctx is not None:
            # Deletions are safe even after a failed read: the listing itself succeeded.
            spec = get_deployment(redis, tenant, connector).spec
            s.deleted = finalize(spec, refresh_id, tr.deleted(), output_ctx.output, state, s)
    record.finished = time.time()
    record.status = "failed" if s.failed else "ok"
    state.save_refresh(record)
    tr.close()
    tr.release()
    with contextlib.suppress(LookupError):
        enqueue.arm_schedule(redis, get_deployment(redis, tenant, connector))


def list_job(tenant: str, connector: str, refresh_id: str, bundle: str) -> dict[str, int]:
    ctx = current()
    state = RedisState(ctx.redis, tenant, connector)
    tr = Tracker(ctx.redis, tenant, connector, refresh_id)
    record = state.refresh(refresh_id)
    if record is None or record.status != "running":
        return {}
    tr.extend()
    key = SessionKey(tenant, connector, bundle)
    if record.picked_up is None:
        record.picked_up = time.time()
        state.save_refresh(record)
    if not tr.planned:
        try:
            _admit(ctx, tenant)  # before anything of the tenant is loaded
            spec = _connector(ctx, key).spec
            check_queue(ctx.output, tenant, connector)  # not a local refresh's dataset
            recovered = recover(spec, ctx.output, state, running=refresh_id)
            listed = _session(ctx, key).list()
            tenant_fragments.check_listing(ctx.redis, tenant, connector, len(listed))
        except FragmentFailure as e:
            if e.kind == FailureKind.INFRA:
                ctx.sessions.discard(key)
                raise
            _close(ctx.redis, None, tenant, connector, refresh_id, e.to_model(step="listing"))
            return {"failed": 1}
        plan = diff(listed, state.fingerprints(), schema_tag(spec))
        # What an earlier refresh read and left uncommitted (a stalled or crashed one),
        # committed by the recovery above, is `recovered`, apart from `skipped`.
        s = record.summary
        s.listed, s.recovered = plan.listed, recovered_unread(recovered, listed, plan)
        s.skipped = plan.skipped - s.recovered
        state.save_refresh(record)
        tr.plan(plan.reads, plan.deleted, enqueue.split(plan.reads.names))
    batches = tr.batches()
    if not batches:
        if tr.claim_finalize():
            enqueue.enqueue_finalize(ctx.redis, tenant, connector, refresh_id)
        return {"to_read": 0}
    timeout = _connector(ctx, key).spec.limits.timeout
    enqueue.enqueue_reads(ctx.redis, tenant, connector, refresh_id, bundle, batches, timeout)
    return {"to_read": sum(len(b) for b in batches)}


def read_job(tenant: str, connector: str, refresh_id: str, bundle: str,
             names: list[str]) -> dict[str, int]:
    ctx = current()
    state = RedisState(ctx.redis, tenant, connector)
    tr = Tracker(ctx.redis, tenant, connector, refresh_id)
    tr.extend()
    key = SessionKey(tenant, connector, bundle)
    done = {"read": 0, "failed": 0, "unread": 0, "already": 0}
    last = False
    fragments = tr.fragments(names)
    # Only this batch's staged versions: reading the whole refresh's here made every
    # job cost more as the refresh went on (quadratic in the fragment count).
    staged = state.staged(refresh_id, [f.name for f in fragments]) if fragments else None
    tag = schema_tag(_connector(ctx, key).spec) if fragments else ""
    todo: collections.deque[Fragment] = collections.deque()
    for fragment in fragments:
        existing = staged.get(fragment.name) if staged is not None else None
        if existing is not None and existing.fingerprint == read_key(fragment.fingerprint, tag):
            # Staged by an earlier attempt of this job that died before reporting.
            last |= tr.account(fragment.name, Outcome.READ, existing.rows)
            done["already"] += 1
        else:
            todo.append(fragment)
    halted = tr.halted if done["already"] else (tr.stopped if todo else False)

    def feed() -> Iterator[Fragment]:
        # Pulled lazily by read_many, at most its window ahead: once a report says the
        # refresh stopped, nothing new is requested.
        while todo and not halted:
            tr.keep()  # a long batch keeps the connector's refresh lock
            yield todo.popleft()

    while todo and not halted:
        try:
            session = _session(ctx, key)
        except FragmentFailure as e:
            if e.kind == FailureKind.INFRA:
                raise
            # Setup failed (a bad bundle or credentials): charged to the next fragment.
            fragment = todo.popleft()
            last |= tr.account(fragment.name, Outcome.FAILED, failure=_excerpt(e, fragment.name))
            halted = tr.halted
            done["failed"] += 1
            continue
        never_started: list[Fragment] = []
        # Pipelined: the runtime reads the next fragment while this one is written.
        for fragment, stream in session.read_many(feed()):
            if stream is None:  # requested, but the session broke first
                never_started.append(fragment)
                continue
            try:
                commit = stage_stream(stream, _connector(ctx, key), fragment, ctx.output,
                                      state, refresh_id)
            except FragmentFailure as e:
                if e.kind == FailureKind.INFRA:
                    ctx.sessions.discard(key)
                    raise
                last |= tr.account(fragment.name, Outcome.FAILED,
                                   failure=_excerpt(e, fragment.name))
                halted = tr.halted
                done["failed"] += 1
                continue
            ctx.sessions.touch(key)
            last |= tr.account(fragment.name, Outcome.READ, commit.rows,
                               rejected=commit.rejected, defaulted=commit.defaulted)
            halted = tr.halted
            done["read"] += 1
        todo.extendleft(reversed(never_started))
        if not ctx.sessions.usable(key):
            ctx.sessions.discard(key)
    for fragment in todo:  # not started: the refresh stopped on a failure
        last |= tr.account(fragment.name, Outcome.UNREAD)
        done["unread"] += 1
    if last or (not fragments and tr.counts().pending == 0):
        # The second case: an earlier attempt accounted everything and died before
        # enqueueing finalize; finalize is unique per refresh, so this is safe.
        enqueue.enqueue_finalize(ctx.redis, tenant, connector, refresh_id)
    return done


def _excerpt(e: FragmentFailure, name: str) -> FailedFragment:
    """What the refresh record keeps of a failure: the message, and the ends of the
    traceback and log (where the cause usually is), bounded."""
    f = e.to_model(name)
    return f.model_copy(update={"traceback": f.traceback[-EXCERPT:], "log": f.log[-EXCERPT:]})


def finalize_job(tenant: str, connector: str, refresh_id: str) -> str:
    ctx = current()
    _close(ctx.redis, ctx, tenant, connector, refresh_id)
    record = RedisState(ctx.redis, tenant, connector).refresh(refresh_id)
    return record.status if record else "gone"


def scheduled_job(tenant: str, connector: str) -> str:
    """A periodic trigger: start a refresh unless one is running."""
    ctx = current()
    return enqueue.start_refresh(ctx.redis, tenant, connector).id


# --- terminal failures (retries exhausted, abandoned for good, or not retryable) -----


def _terminal(job: Job, exc: BaseException | None) -> bool:
    """Whether this failure ends the job. A deliberate error whose kind says a retry
    cannot help ends it now: RQ retries while `retries_left` is positive."""
    if isinstance(exc, ConnectorError) and not exc.retryable:
        job.retries_left = 0
        return True
    return not (job.retries_left and job.retries_left > 0)


def _failure(name: str, exc: BaseException | None,
             tb: TracebackType | None) -> FailedFragment:
    text = "".join(traceback.format_tb(tb))[-2000:] if tb else ""
    if isinstance(exc, ConnectorError) and not exc.retryable:
        return FailedFragment(name=name, kind=exc.kind, message=str(exc), traceback=text)
    if exc is None or isinstance(exc, AbandonedJobError):
        # rq's reaper hands the callback an empty AbandonedJobError: say what it means
        msg = "its worker died while running it (killed, or its machine went away)"
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return FailedFragment(name=name, kind=FailureKind.INFRA,
                          message=f"infrastructure failure after retries: {msg}",
                          traceback=text)


def on_list_failed(job: Job, connection: Redis, exc_type: Any, exc: BaseException | None,
                   tb: TracebackType | None) -> None:
    if not _terminal(job, exc):
        return
    tenant, connector, refresh_id, _ = job.args
    failure = _failure("", exc, tb).of_step("listing")
    _close(connection, None, tenant, connector, refresh_id, failure)


def on_read_failed(job: Job, connection: Redis, exc_type: Any, exc: BaseException | None,
                   tb: TracebackType | None) -> None:
    if not _terminal(job, exc):
        return
    tenant, connector, refresh_id, _, names = job.args
    tr = Tracker(connection, tenant, connector, refresh_id)
    last = False
    for f in tr.fragments(names):
        last |= tr.account(f.name, Outcome.FAILED, failure=_failure(f.name, exc, tb))
    if last:
        enqueue.enqueue_finalize(connection, tenant, connector, refresh_id)


def on_finalize_failed(job: Job, connection: Redis, exc_type: Any, exc: BaseException | None,
                       tb: TracebackType | None) -> None:
    if not _terminal(job, exc):
        return
    tenant, connector, refresh_id = job.args
    state = RedisState(connection, tenant, connector)
    record = state.refresh(refresh_id) or RefreshRecord(id=refresh_id, started=time.time())
    record.summary.failed += 1
    record.summary.failures.append(_failure("(finalize)", exc, tb))
    record.status, record.finished = "failed", time.time()
    state.save_refresh(record)
    Tracker(connection, tenant, connector, refresh_id).release()
