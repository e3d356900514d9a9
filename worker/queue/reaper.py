"""The reaper: abandoned jobs requeued, due scheduled jobs promoted, stuck refreshes found.

RQ only learns that a job's worker died when the job's started-registry entry expires
(the worker heartbeats it with a short TTL, see worker.queue.worker). A reaper thread
runs in every worker, and one at a time (by lock) runs RQ's started-registry cleanup
every REAP_EVERY s: in rq 3.0 an abandoned job with retries left is retried (with its
backoff), otherwise failed through its failure callback. The same pass promotes due
scheduled jobs (retry backoff, periodic refreshes) onto their queues, so RQ's separate
scheduler process is not needed; drops lapsed tenant-slot leases, putting back a job
whose worker died between claiming its slot and starting it (worker.queue.slots); and
runs the stuck-refresh watchdog (worker.queue.watchdog) on its own cadence. A
SIGKILLed worker's job runs again after at most STARTED_TTL + REAP_EVERY + first
backoff (~35 s default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from worker.queue import slots, watchdog
from worker.queue.backlog import queue_names
from worker.queue.conn import REDIS_DOWN
from worker.settings import settings
from worker.state import keys

REAP_EVERY = settings().reap_every
log = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Runs `reap` every REAP_EVERY s until stopped; a failed pass is logged, not fatal."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(daemon=True, name="reaper")
        self._r = redis
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(REAP_EVERY):
            try:
                reap(self._r)
            except REDIS_DOWN as e:  # a blip must not end the thread
                log.warning("reaper: Redis unavailable (%s)", e)
            except Exception:
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop_event.set()


def reap(r: Redis) -> None:
    """One pass for every tenant's queue, unless another worker holds the pass's lock."""
    try:
        watchdog.watch(r)  # its own lock and cadence
    except REDIS_DOWN:
        raise
    except Exception:  # a watchdog bug must not stop the reaping below
        log.exception("watchdog pass failed")
    if not r.set(keys.reaper_lock(), os.getpid(), nx=True, ex=max(2, int(REAP_EVERY))):
        return
    # Before the started registries: a requeued job must not wait for their cleanup.
    try:
        for job_id in slots.recover_lapsed(r):
            log.warning("reaper: job %s was claimed by a worker that stopped before "
                        "starting it; put back on its queue", job_id)
    except REDIS_DOWN:
        raise
    except Exception:  # must not stop the started registries' cleanup below
        log.exception("lapsed-lease pass failed")
    for name in queue_names(r):
        q = Queue(name, connection=r, serializer=JSONSerializer)
        StartedJobRegistry(queue=q, serializer=JSONSerializer,
                           death_penalty_class=TimerDeathPenalty).cleanup()
        scheduled = ScheduledJobRegistry(queue=q, serializer=JSONSerializer)
        for job_id in scheduled.get_jobs_to_schedule(int(time.time())):
            with contextlib.suppress(InvalidJobOperation, NoSuchJobError):
                scheduled.requeue(job_id)
