"""The per-tenant cap on running jobs: which tenant queues a worker may take a job from.

Round-robin across tenant queues only orders dequeues; without a cap one tenant's long
jobs hold every worker while another tenant's work waits. A tenant may run at most its
`running` ceiling (CONNECTOR_MAX_TENANT_RUNNING, or `connector ceilings TENANT
--running N`) of jobs at once while another tenant below its own cap has work pending;
a tenant alone may use every worker.

- Pending: jobs on the tenant's queue (a refused job is put back there) and jobs in its
  scheduled registry due within the longest retry backoff (an infrastructure retry
  waiting out its backoff is work the tenant has now; a periodic refresh hours away is
  not). Running jobs with nothing queued behind them are not: the tenant is served.
  The project makes no dependent jobs, so RQ's deferred registry stays empty.
- What the cap holds back: jobs that run tenant code (list, read). A finalize or a
  scheduled trigger runs only the platform's code for a refresh already admitted: it
  is never refused (a refresh that has read everything is committed at once, not after
  the tenant's other reads), and it holds a lease while it runs like any other job, so
  the tenant's next tenant-code job waits for it.
- Counting: each running job of a tenant holds a lease in a sorted set (job id ->
  expiry, worker.state.keys.tenant_running), renewed by the job's heartbeat (re-added if
  a long Redis stall let it lapse) and removed when the job ends. Expiries are Redis's
  own clock (TIME in the scripts), so a worker whose clock is off cannot drop or stretch
  other workers' leases.
- Atomic: a worker claims its slot in one Lua script after it pops a job, re-checking
  the cap and the other tenants' pending work, so two workers cannot both take the last
  slot; a refused job goes back to the front of its queue in the same script.
- Nothing leaks: a worker killed mid-job stops renewing, so its slot frees itself after
  STARTED_TTL. One killed (or stopped) after its claim but before RQ started the job
  leaves the job on no queue and in no registry, only in its lease: the reaper
  (`recover_lapsed`) puts such a job back at the front of its queue when its lease
  lapses. A claim whose answer was lost to a Redis blip is given back (lease dropped,
  job requeued unless it already is).
- Before popping, a worker leaves out the queues of tenants at their cap (one pipelined
  read; a stale answer only costs a refused claim) unless a platform-only job is at
  their front.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from worker import ceilings
from worker.queue.enqueue import platform_only
from worker.settings import settings
from worker.state import keys

CAPS_FRESH = 5.0  # seconds a worker reuses the tenants' caps before re-reading them
log = logging.getLogger(__name__)

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: the claiming tenant's running set and queue, then (queue, scheduled registry,
# running set) of each other tenant. ARGV: lease seconds, job id, the claiming tenant's
# cap, 1 if the job is capped (runs tenant code), pending horizon seconds, each other's
# cap.
_CLAIM = _NOW + """
if ARGV[4] == '1' and
   redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') >= tonumber(ARGV[3]) then
  for i = 3, #KEYS, 3 do
    local pending = redis.call('LLEN', KEYS[i]) > 0 or
      redis.call('ZCOUNT', KEYS[i + 1], '-inf', now + tonumber(ARGV[5])) > 0
    if pending and redis.call('ZCOUNT', KEYS[i + 2], '(' .. now, '+inf') <
                   tonumber(ARGV[5 + i / 3]) then
      redis.call('LPUSH', KEYS[2], ARGV[2])
      return 0
    end
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return 1
"""

# KEYS: running set. ARGV: lease seconds, job id. Re-adds a lease that lapsed.
_RENEW = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
"""

# KEYS: running set, queue. ARGV: job id.
_GIVE_BACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
if not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
end
"""

# KEYS: a tenant's running set, its queue. ARGV: RQ's job key prefix. Drops lapsed
# leases; a job still `queued` (RQ marks it started before it runs) and on no queue was
# popped by a worker that died before starting it: back to the front of its queue.
_LAPSED = _NOW + """
local back = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('HGET', ARGV[1] .. id, 'status') == 'queued' and
     not redis.call('LPOS', KEYS[2], id) then
    redis.call('LPUSH', KEYS[2], id)
    table.insert(back, id)
  end
end
return back
"""


def lease() -> int:
    """Seconds a lease lasts unless renewed."""
    return settings().started_ttl


def pending_horizon() -> int:
    """A scheduled job due within this many seconds is pending work: the longest retry
    backoff, so a retry waiting out its backoff counts."""
    return max(settings().retry_intervals, default=0)


def _scheduled_key(queue: Queue) -> str:
    return ScheduledJobRegistry(queue.name, connection=queue.connection).key


def _tenant_queue(r: Redis, tenant: str) -> Queue:
    return Queue(keys.tenant_queue(tenant), connection=r)


class TenantSlots:
    """One worker's view of the tenants' running slots, and the slot its job holds."""

    def __init__(self, redis: Redis) -> None:
        self._r = redis
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._give_back = redis.register_script(_GIVE_BACK)
        self._caps: dict[str, int] = {}
        self._caps_read = 0.0
        self._held: tuple[str, str] | None = None  # (running set, job id)
        # The heartbeat thread renews while the job's thread releases: a renewal racing
        # the release must not bring an ended job's lease back.
        self._lock = threading.Lock()

    def _tenants(self, queues: list[Queue]) -> dict[str, str]:
        """Queue name -> tenant, for the tenant queues among `queues`."""
        out = {}
        for q in queues:
            if q.name != keys.system_queue():
                out[q.name] = q.name.rsplit(":", 1)[1]
        return out

    def _cap(self, tenant: str) -> int:
        if time.monotonic() - self._caps_read > CAPS_FRESH:
            self._caps, self._caps_read = {}, time.monotonic()
        if tenant not in self._caps:
            try:
                self._caps[tenant] = ceilings.tenant_ceilings(self._r, tenant).running
            except ceilings.CeilingError as e:
                log.error("Tenant %s: %s; using the default running cap", tenant, e)
                self._caps[tenant] = ceilings.Ceilings().running
        return self._caps[tenant]

    def open_queues(self, queues: list[Queue]) -> list[Queue]:
        """`queues` without those of tenants at their cap while another has work
        pending, unless a platform-only job is at their front."""
        tenants = self._tenants(queues)
        if len(tenants) < 2:
            return queues
        now = time.time()  # a hint only: the claim decides, on Redis's clock
        tenant_queues = [q for q in queues if q.name in tenants]
        with self._r.pipeline(transaction=False) as p:
            for q in tenant_queues:
                p.llen(q.key)
                p.zcount(_scheduled_key(q), "-inf", now + pending_horizon())
                p.zcount(keys.tenant_running(tenants[q.name]), f"({now}", "+inf")
                p.lindex(q.key, 0)
            counts = p.execute()
        at_cap, waiting, closed = set(), set(), set()
        for i, q in enumerate(tenant_queues):
            queued, scheduled, running, front = counts[4 * i:4 * i + 4]
            full = running >= self._cap(tenants[q.name])
            if full and not (front and platform_only(front.decode())):
                closed.add(q.name)
            if (queued or scheduled) and not full:
                waiting.add(q.name)
            if full:
                at_cap.add(q.name)
        return [q for q in queues if q.name not in closed or not (waiting - {q.name})]

    def claim(self, queue: Queue, job_id: str) -> bool:
        """Take a slot of the queue's tenant for `job_id`; False: at its cap while
        another tenant has work pending, and the job is back at the front of its queue."""
        tenants = self._tenants([queue])
        if not tenants:
            return True  # the system queue is not capped
        tenant = tenants[queue.name]
        others = [(q, t) for q, t in self._all_tenants() if t != tenant]
        own = keys.tenant_running(tenant)
        got = self._claim(
            keys=[own, queue.key,
                  *[k for q, t in others
                    for k in (q.key, _scheduled_key(q), keys.tenant_running(t))]],
            args=[lease(), job_id, self._cap(tenant), 0 if platform_only(job_id) else 1,
                  pending_horizon(), *[self._cap(t) for _, t in others]])
        if got:
            with self._lock:
                self._held = (own, job_id)
        return bool(got)

    def give_back(self, queue: Queue, job_id: str) -> None:
        """Undo a claim that may or may not have happened (its answer was lost): no
        lease for `job_id`, and the job at the front of its queue unless already there."""
        tenants = self._tenants([queue])
        if tenants:  # a claim on the system queue asks nothing of Redis: nothing to undo
            self._give_back(keys=[keys.tenant_running(tenants[queue.name]), queue.key],
                            args=[job_id])

    def _all_tenants(self) -> list[tuple[Queue, str]]:
        """(queue, tenant) of every known tenant."""
        from worker.registry import known_tenants

        return [(_tenant_queue(self._r, t), t) for t in known_tenants(self._r)]

    def renew(self) -> None:
        """Extend the held lease, re-adding it if it lapsed (a long Redis stall): the
        job still runs, so it still counts."""
        with self._lock:
            if self._held is not None:
                own, job_id = self._held
                self._renew(keys=[own], args=[lease(), job_id])

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            self._r.zrem(*held)


def recover_lapsed(r: Redis) -> list[str]:
    """Drop every tenant's lapsed leases; returns the ids of jobs put back on their
    queue because the worker that claimed them died before starting them."""
    from worker.registry import known_tenants

    script = r.register_script(_LAPSED)
    back: list[str] = []
    for tenant in known_tenants(r):
        ids = script(keys=[keys.tenant_running(tenant), _tenant_queue(r, tenant).key],
                     args=[Job.key_for("")])
        back += [i.decode() if isinstance(i, bytes) else i for i in ids]
    return back
