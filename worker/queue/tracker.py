"""The live part of one queued refresh, in Redis: what is left to read, how it went.

Workers on many machines report into it concurrently. Accounting is per fragment and
idempotent: a fragment leaves the `pending` set once, and only that first report moves
the counters, so a retried job can report again harmlessly. The refresh is complete
when `pending` is empty; the report that empties it wins the right to finalize.

The one-refresh-per-connector lock lives here too: a key holding the running
refresh's id, with a TTL its jobs extend, released when the refresh closes.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum

from pydantic import BaseModel
from redis import Redis

from worker.listing import Listing
from worker.models import FailedFragment, Fragment, RefreshSummary
from worker.state.keys import ConnectorKeys

RUN_TTL = 7 * 86400       # a running refresh's bookkeeping outlives any sane refresh
DONE_TTL = 3600           # kept briefly after close for late readers
LOCK_TTL = 900            # extended by every job of the refresh
EXTEND_EVERY = 30.0       # seconds between a job's extensions of the lock


class Outcome(StrEnum):
    READ = "read"
    FAILED = "failed"
    UNREAD = "unread"     # not started because the refresh stopped on a failure


class Counts(BaseModel):
    read: int = 0
    failed: int = 0
    unread: int = 0
    rows: int = 0
    rejected: int = 0
    defaulted: int = 0
    pending: int = 0

    def apply(self, s: RefreshSummary, failed: bool = True) -> None:
        """Copy the fragment counts into a refresh summary."""
        s.read, s.rows, s.rejected, s.defaulted = (self.read, self.rows, self.rejected,
                                                   self.defaulted)
        if failed:
            s.failed = self.failed


# Failures whose text a refresh keeps (the count covers all): every worker's reads in
# flight can fail before the refresh stops, each keeping up to 24,000 characters of the
# tenant's text, and a connector keeps KEEP_REFRESHES records in the shared Redis.
MAX_KEPT_FAILURES = 20

# KEYS pending, counts, failures, stop, finalize; ARGV name, outcome, rows, failure JSON,
# ttl, rejected, defaulted, failures kept at most.
# Returns {1 when this report emptied `pending` first (the caller finalizes), 1 when
# the refresh is stopped}: the reporter learns both in the round trip it makes anyway.
_ACCOUNT = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
  if ARGV[2] == 'read' then
    redis.call('HINCRBY', KEYS[2], 'rows', ARGV[3])
    redis.call('HINCRBY', KEYS[2], 'rejected', ARGV[6])
    redis.call('HINCRBY', KEYS[2], 'defaulted', ARGV[7])
  end
  if ARGV[2] == 'failed' then
    if redis.call('LLEN', KEYS[3]) < tonumber(ARGV[8]) then
      redis.call('RPUSH', KEYS[3], ARGV[4])
      redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
    end
    redis.call('SET', KEYS[4], '1', 'EX', tonumber(ARGV[5]))
  end
end
local stopped = redis.call('EXISTS', KEYS[4])
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('SET', KEYS[5], '1', 'NX', 'EX',
                                                    tonumber(ARGV[5])) then
  return {1, stopped}
end
return {0, stopped}
"""

# KEYS lock; ARGV id, ttl
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""
# KEYS lock; ARGV id, ttl. Extended while this refresh holds it, taken again if it lapsed.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""
# KEYS lock, bundle pin; ARGV id. The pin goes with the lock: the next refresh sets its own.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
"""


class Tracker:
    def __init__(self, redis: Redis, tenant: str, connector: str, refresh_id: str) -> None:
        self._r = redis
        self.id = refresh_id
        self.keys = ConnectorKeys(tenant, connector)
        k = self.keys.run
        self._todo, self._pending = k(refresh_id, "todo"), k(refresh_id, "pending")
        self._counts, self._failures = k(refresh_id, "counts"), k(refresh_id, "failures")
        self._stop, self._finalize = k(refresh_id, "stop"), k(refresh_id, "finalize")
        self._deleted, self._planned = k(refresh_id, "deleted"), k(refresh_id, "planned")
        self._batches = k(refresh_id, "batches")
        self._account = redis.register_script(_ACCOUNT)
        self._extended = -EXTEND_EVERY
        self.halted = False  # the stop flag as the last report saw it

    # --- the lock ------------------------------------------------------------------

    def acquire(self) -> str | None:
        """Take the connector's refresh lock; returns the running refresh's id when
        another one holds it."""
        if self._r.set(self.keys.lock, self.id, nx=True, ex=LOCK_TTL):
            return None
        holder = self._r.get(self.keys.lock)
        return holder.decode() if holder else self.acquire()

    def extend(self) -> bool:
        self._extended = time.monotonic()
        return bool(self._r.eval(_EXTEND, 1, self.keys.lock, self.id, LOCK_TTL))

    def hold(self) -> bool:
        """Keep the lock for a refresh that still has a live job: its jobs extend it
        only while they run, so one waiting on the queue (busy workers, or its tenant
        at its running cap) longer than LOCK_TTL would lose it to a second refresh of
        the same connector. False: another refresh holds it."""
        return bool(self._r.eval(_HOLD, 1, self.keys.lock, self.id, LOCK_TTL))

    def keep(self) -> None:
        """Extend the lock if this tracker has not for EXTEND_EVERY seconds: a batch of
        one-row fragments keeps it without a round trip per fragment."""
        if time.monotonic() - self._extended >= EXTEND_EVERY:
            self.extend()

    def release(self) -> None:
        self._r.eval(_RELEASE, 2, self.keys.lock, self.keys.bundle_pin, self.id)

    # --- the plan ------------------------------------------------------------------

    def plan(self, to_read: Listing, deleted: list[str],
             batches: list[list[str]]) -> None:
        """Record what this refresh must read (split into read-job batches) and delete,
        in one transaction, once: a retried list job finds the same plan."""
        if self.planned:
            return
        with self._r.pipeline(transaction=True) as p:
            # Overwrite, not append: redis-py retries a transaction whose reply was lost
            # (Redis restarted right after applying it); the retry must not double it.
            p.delete(self._todo, self._pending, self._deleted, self._batches)
            for i in range(0, len(batches), 500):
                p.rpush(self._batches, *[json.dumps(b) for b in batches[i:i + 500]])
            for chunk in to_read.chunks(1000):
                p.hset(self._todo, mapping={f.name: f.model_dump_json() for f in chunk})
                p.sadd(self._pending, *[f.name for f in chunk])
            if deleted:
                p.rpush(self._deleted, *deleted)
            p.set(self._planned, "1")
            for key in (self._todo, self._pending, self._deleted, self._planned,
                        self._batches):
                p.expire(key, RUN_TTL)
            p.execute()

    @property
    def planned(self) -> bool:
        return bool(self._r.exists(self._planned))

    def fragments(self, names: list[str]) -> list[Fragment]:
        """The planned fragments among `names` still waiting to be read, in order."""
        if not names:
            return []
        waiting = self._r.smismember(self._pending, names)
        names = [n for n, w in zip(names, waiting, strict=True) if w]
        if not names:
            return []
        raw = self._r.hmget(self._todo, names)
        return [Fragment.model_validate_json(v) for v in raw if v is not None]

    def batch_count(self) -> int:
        return int(self._r.llen(self._batches))

    def batches(self) -> list[list[str]]:
        return [json.loads(b) for b in self._r.lrange(self._batches, 0, -1)]

    def deleted(self) -> list[str]:
        return [n.decode() for n in self._r.lrange(self._deleted, 0, -1)]

    # --- reports -------------------------------------------------------------------

    def account(self, name: str, outcome: Outcome, rows: int = 0,
                failure: FailedFragment | None = None, rejected: int = 0,
                defaulted: int = 0) -> bool:
        """Report one fragment's outcome; True if this report completed the refresh.
        Updates `halted`."""
        won, stopped = self._account(
            keys=[self._pending, self._counts, self._failures, self._stop, self._finalize],
            args=[name, outcome.value, rows, failure.model_dump_json() if failure else "",
                  RUN_TTL, rejected, defaulted, MAX_KEPT_FAILURES])
        self.halted = bool(stopped)
        return bool(won)

    def halt(self) -> None:
        """The refresh is being closed from outside (worker.queue.watchdog): jobs still
        running start nothing new and never win the right to finalize."""
        with self._r.pipeline(transaction=True) as p:
            p.set(self._stop, "1", ex=RUN_TTL)
            p.set(self._finalize, "1", ex=RUN_TTL)
            p.execute()

    def claim_finalize(self) -> bool:
        """For a refresh with nothing to read: the right to finalize, once."""
        return bool(self._r.set(self._finalize, "1", nx=True, ex=RUN_TTL))

    @property
    def stopped(self) -> bool:
        self.halted = bool(self._r.exists(self._stop))
        return self.halted

    def counts(self) -> Counts:
        raw = {k.decode(): int(v) for k, v in self._r.hgetall(self._counts).items()}
        return Counts(**raw, pending=self._r.scard(self._pending))

    def failures(self) -> list[FailedFragment]:
        return [FailedFragment.model_validate_json(v)
                for v in self._r.lrange(self._failures, 0, -1)]

    def close(self) -> None:
        """Drop the bulky bookkeeping; keep the rest briefly for late readers."""
        with self._r.pipeline(transaction=False) as p:
            p.delete(self._todo, self._pending, self._deleted, self._batches)
            for key in (self._counts, self._failures, self._stop, self._finalize,
                        self._planned):
                p.expire(key, DONE_TTL)
            p.execute()
