"""The queues a worker serves (one per tenant, then the system queue), and whether any
work is left on them, for `--burst`."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from worker.registry import known_tenants
from worker.state import keys

SOON = 60  # seconds: burst mode still counts scheduled jobs due within this as work


def queue_names(redis: Redis) -> list[str]:
    return [keys.tenant_queue(t) for t in known_tenants(redis)] + [keys.system_queue()]


def work_left(r: Redis) -> bool:
    """Whether any queue holds a job that is queued, running, or due for a retry soon."""
    soon = time.time() + SOON
    for name in queue_names(r):
        q = Queue(name, connection=r, serializer=JSONSerializer)
        if q.count or StartedJobRegistry(queue=q).get_job_count(cleanup=False):
            return True
        if r.zcount(ScheduledJobRegistry(queue=q).key, 0, soon):
            return True
    return False
