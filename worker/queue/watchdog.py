"""Stuck refreshes: a running refresh none of whose jobs can run any more.

A queued refresh only advances through its RQ jobs (list, read batches, finalize), and
each job enqueues the next before it ends, so until the refresh record closes at least
one of them is queued, running, scheduled for a retry or deferred. When none is (jobs
deleted by hand or lost with a Redis that lost writes, an orchestrator that died between
taking the connector's lock and enqueueing the list job), nothing would ever close the
record or release the lock, and every later refresh would only join the dead one.

The watchdog runs in the reaper thread of one worker at a time, every WATCH_EVERY s. A
running refresh (the lock holder, and any recent record still `running`) with no live
job is noted; if it is still so STUCK_AFTER s later it is
- finalized, when every fragment was accounted for (only the finalize job was lost), or
- marked failed with the reason, its bookkeeping closed and its lock released, so the
  next refresh runs (and reads whatever this one left unread).
A lock held by a refresh that is already closed is released too. A running refresh with
a live job keeps its lock, taken again if it lapsed: jobs extend it only while they
run, and one waiting on its queue past the lock's TTL must not let a second refresh of
the connector start beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from redis import Redis
from rq.job import Job

from worker.models import FailedFragment, FailureKind, RefreshRecord
from worker.queue import enqueue
from worker.queue.tracker import Tracker
from worker.registry import get_deployment, known_tenants
from worker.settings import settings
from worker.state import keys
from worker.state.keys import ConnectorKeys
from worker.state.redis import RedisState

log = logging.getLogger(__name__)
RECENT = 3  # newest refresh records of a connector looked at (besides the lock holder)
_DEAD = {"finished", "failed", "stopped", "canceled"}


def watch_every() -> float:
    return settings().watch_every


def stuck_after() -> float:
    return settings().stuck_after


def watch(r: Redis) -> list[str]:
    """One pass over every tenant's connectors, unless another worker ran one within
    WATCH_EVERY s. Returns what was done, one line per refresh acted on."""
    every = watch_every()
    if not r.set(keys.watchdog_lock(), os.getpid(), nx=True, px=max(100, int(every * 1000))):
        return []
    done = []
    for tenant in known_tenants(r):
        for raw in sorted(r.smembers(keys.tenant_connectors(tenant))):
            name = raw.decode()
            for rid in running(r, tenant, name):
                action = check(r, tenant, name, rid)
                if action:
                    log.warning("watchdog: refresh %s of %s/%s: %s", rid, tenant, name, action)
                    done.append(f"{tenant}/{name} {rid}: {action}")
    return done


def running(r: Redis, tenant: str, name: str) -> list[str]:
    """The lock holder and the recent refreshes still recorded as running."""
    holder = r.get(ConnectorKeys(tenant, name).lock)
    ids = {rec.id for rec in RedisState(r, tenant, name).refreshes(RECENT)
           if rec.status == "running"}
    if holder:
        ids.add(holder.decode())
    return sorted(ids)


def alive(r: Redis, tenant: str, name: str, refresh_id: str) -> bool:
    """Whether any job of the refresh can still run: started, scheduled, deferred, or
    queued and actually on its queue."""
    tr = Tracker(r, tenant, name, refresh_id)
    ids = enqueue.refresh_job_ids(tenant, name, refresh_id, tr.batch_count())
    with r.pipeline(transaction=False) as p:
        for job_id in ids:
            p.hget(Job.key_for(job_id), "status")
        statuses = [s.decode() if s else None for s in p.execute()]
    queued = []
    for job_id, status in zip(ids, statuses, strict=True):
        if status == "queued":
            queued.append(job_id)
        elif status is not None and status not in _DEAD:
            return True
    if not queued:
        return False
    on_queue = set(enqueue.tenant_queue(r, tenant).get_job_ids())
    return any(job_id in on_queue for job_id in queued)


def check(r: Redis, tenant: str, name: str, refresh_id: str) -> str | None:
    """Act on one running refresh if it is stuck; returns what was done."""
    tr = Tracker(r, tenant, name, refresh_id)
    state = RedisState(r, tenant, name)
    record = state.refresh(refresh_id)
    suspect = tr.keys.run(refresh_id, "suspect")
    if record is not None and record.status != "running":
        if r.get(tr.keys.lock) == refresh_id.encode():
            tr.release()
            return f"released the lock it held after closing ({record.status})"
        return None
    if alive(r, tenant, name, refresh_id):
        r.delete(suspect)
        tr.hold()
        return None
    after = stuck_after()
    now = time.time()
    ttl = max(10, int(3 * (after + watch_every())))
    if r.set(suspect, now, nx=True, ex=ttl):
        return None  # first seen without a live job: look again later
    since = float(r.get(suspect) or now)
    if now - since < after:
        return None
    r.delete(suspect)
    if record is None:
        tr.release()
        return "released the lock of a refresh that has no record"
    pending = tr.counts().pending
    if tr.planned and pending == 0:
        enqueue.enqueue_finalize(r, tenant, name, refresh_id, force=True)
        return "every fragment was accounted for but the finalize job was lost: re-enqueued"
    if tr.planned:
        reason = (f"refresh stalled: none of its jobs is queued, running or scheduled any "
                  f"more (lost), with {pending} fragment(s) still unread; marked failed "
                  f"after {after:.0f} s without progress so the next refresh can run")
    else:
        reason = ("refresh stalled: its list job is gone (not queued, running or scheduled) "
                  f"and nothing was listed; marked failed after {after:.0f} s without "
                  "progress so the next refresh can run")
    fail(r, tenant, name, record, reason)
    return "marked failed (stalled), lock released"


def fail(r: Redis, tenant: str, name: str, record: RefreshRecord, reason: str) -> None:
    """Close a running refresh as failed with `reason`; late reports of its jobs (if any
    still run somewhere) change nothing."""
    tr = Tracker(r, tenant, name, record.id)
    tr.halt()
    c = tr.counts()
    s = record.summary
    c.apply(s, failed=False)
    s.failures = [*tr.failures(), FailedFragment(step="refresh", kind=FailureKind.INFRA,
                                                 message=reason)]
    s.failed = c.failed + 1
    record.status, record.finished = "failed", time.time()
    RedisState(r, tenant, name).save_refresh(record)
    tr.close()
    tr.release()
    with contextlib.suppress(LookupError):
        enqueue.arm_schedule(r, get_deployment(r, tenant, name))
