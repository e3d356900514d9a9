"""The per-tenant cap on running jobs: which tenant queues a worker may take a job from.

Round-robin across tenant queues only orders dequeues; without a cap one tenant's long
jobs hold every worker while another tenant's work waits. A tenant may run at most its
`running` ceiling (CONNECTOR_MAX_TENANT_RUNNING, or `connector ceilings TENANT
--running N`) of jobs at once while another tenant below its own cap has work queued; a
tenant alone may use every worker.

- Counting: each running job of a tenant holds a lease in a sorted set (job id -> expiry,
  worker.state.keys.tenant_running), renewed by the job's heartbeat and removed when the
  job ends. A worker killed mid-job stops renewing, so its slot frees itself after
  STARTED_TTL; nothing leaks.
- Atomic: a worker claims its slot in one Lua script after it pops a job, re-checking
  the cap and the other tenants' queues, so two workers cannot both take the last slot.
  A job refused there goes back to the front of its queue (it stays queued, runs later).
- Before popping, a worker leaves out the queues of tenants at their cap (one pipelined
  read; a stale answer only costs a refused claim).
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from rq import Queue

from worker import ceilings
from worker.settings import settings
from worker.state import keys

LEASE = settings().started_ttl
CAPS_FRESH = 5.0  # seconds a worker reuses the tenants' caps before re-reading them
log = logging.getLogger(__name__)

# KEYS: the claiming tenant's running set, then (queue, running set) of each other
# tenant. ARGV: now, lease expiry, job id, the claiming tenant's cap, each other's cap.
_CLAIM = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  for i = 2, #KEYS, 2 do
    if redis.call('LLEN', KEYS[i]) > 0 and
       redis.call('ZCOUNT', KEYS[i + 1], '(' .. now, '+inf') < tonumber(ARGV[4 + i / 2]) then
      return 0
    end
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


class TenantSlots:
    """One worker's view of the tenants' running slots, and the slot its job holds."""

    def __init__(self, redis: Redis) -> None:
        self._r = redis
        self._claim = redis.register_script(_CLAIM)
        self._caps: dict[str, int] = {}
        self._caps_read = 0.0
        self._held: tuple[str, str] | None = None  # (running set, job id)

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
        """`queues` without those of tenants at their cap while another waits."""
        tenants = self._tenants(queues)
        if len(tenants) < 2:
            return queues
        now = time.time()
        tenant_queues = [q for q in queues if q.name in tenants]
        with self._r.pipeline(transaction=False) as p:
            for q in tenant_queues:
                p.llen(q.key)
                p.zcount(keys.tenant_running(tenants[q.name]), f"({now}", "+inf")
            counts = p.execute()
        queued = {q.name: counts[2 * i] for i, q in enumerate(tenant_queues)}
        running = {q.name: counts[2 * i + 1] for i, q in enumerate(tenant_queues)}
        full = {n for n in tenants if running[n] >= self._cap(tenants[n])}
        waiting = {n for n in tenants if queued[n] and n not in full}
        return [q for q in queues if q.name not in full or not (waiting - {q.name})]

    def claim(self, queue: Queue, job_id: str) -> bool:
        """Take a slot of the queue's tenant for `job_id`; False: at its cap while
        another tenant waits (the caller puts the job back)."""
        tenants = self._tenants([queue])
        if not tenants:
            return True  # the system queue is not capped
        tenant = tenants[queue.name]
        others = [(q, t) for q, t in self._all_tenants().items() if t != tenant]
        now = time.time()
        own = keys.tenant_running(tenant)
        got = self._claim(
            keys=[own, *[k for q, t in others for k in (q, keys.tenant_running(t))]],
            args=[now, now + LEASE, job_id, self._cap(tenant),
                  *[self._cap(t) for _, t in others]])
        if got:
            self._held = (own, job_id)
        return bool(got)

    def _all_tenants(self) -> dict[str, str]:
        """RQ queue key -> tenant, for every known tenant."""
        from worker.registry import known_tenants

        return {Queue(keys.tenant_queue(t), connection=self._r).key: t
                for t in known_tenants(self._r)}

    def renew(self) -> None:
        if self._held is not None:
            own, job_id = self._held
            self._r.zadd(own, {job_id: time.time() + LEASE}, xx=True)

    def release(self) -> None:
        if self._held is not None:
            own, job_id = self._held
            self._held = None
            self._r.zrem(own, job_id)
