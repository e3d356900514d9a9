"""The queue-mode worker: an RQ SimpleWorker on every tenant's queue.

- No fork per job (SimpleWorker): jobs run in this process, so sandbox sessions stay
  warm between jobs (worker.queue.sessions), keyed by tenant, connector and version.
- Fairness: one queue per tenant, dequeued round-robin; the list of tenant queues is
  re-read from Redis while idle, so a newly deployed tenant is served within a second.
- Dead workers: RQ only learns that a job's worker died when the job's started-registry
  entry expires, and SimpleWorker sends no heartbeat while a job runs. Here a thread
  heartbeats the running job every HEARTBEAT s with a short entry TTL (STARTED_TTL),
  and a reaper thread in every worker (one at a time, by lock) runs RQ's started-
  registry cleanup every REAP_EVERY s: in rq 3.0 an abandoned job with retries left is
  retried (with its backoff), otherwise failed through its failure callback. The same
  pass promotes due scheduled jobs (retry backoff, periodic refreshes) onto their
  queues, so RQ's separate scheduler process is not needed. A SIGKILLed worker's job
  runs again after at most STARTED_TTL + REAP_EVERY + first backoff (~35 s default).
- `--burst` quits when no tenant queue holds work and nothing is running, abandoned or
  due for a retry soon: it drains retries too, which RQ's own burst mode would not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import redis.exceptions
from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.worker import DequeueStrategy, SimpleWorker, WorkerStatus

from worker.queue import context
from worker.queue.conn import connect
from worker.queue.context import WorkerContext
from worker.registry import known_tenants
from worker.state import keys


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


HEARTBEAT = _env_float("CONNECTOR_HEARTBEAT", 5)
STARTED_TTL = int(_env_float("CONNECTOR_STARTED_TTL", 20))
REAP_EVERY = _env_float("CONNECTOR_REAP_EVERY", 5)
POLL = 1                      # seconds a dequeue blocks before re-reading tenants
SOON = 60                     # burst: scheduled jobs due within this still count as work


def queue_names(redis: Redis) -> list[str]:
    return [keys.tenant_queue(t) for t in known_tenants(redis)] + [keys.system_queue()]


class _JobHeartbeat(threading.Thread):
    def __init__(self, worker: ConnectorWorker, job: Job, execution: Any) -> None:
        super().__init__(daemon=True, name="job-heartbeat")
        self._w, self._job, self._execution = worker, job, execution
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT):
            with contextlib.suppress(redis.exceptions.RedisError):
                self._w.maintain_heartbeats(self._job, self._execution)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class _Reaper(threading.Thread):
    """Requeues abandoned jobs and promotes due scheduled ones, for every tenant."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(daemon=True, name="reaper")
        self._r = redis
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(REAP_EVERY):
            try:
                reap(self._r)
            except Exception:  # keep reaping: a blip must not end the thread
                logging.getLogger("rq.worker").exception("reaper pass failed")

    def stop(self) -> None:
        self._stop_event.set()


def reap(r: Redis) -> None:
    if not r.set(keys.reaper_lock(), os.getpid(), nx=True, ex=max(2, int(REAP_EVERY))):
        return
    for name in queue_names(r):
        q = Queue(name, connection=r, serializer=JSONSerializer)
        StartedJobRegistry(queue=q, serializer=JSONSerializer,
                           death_penalty_class=TimerDeathPenalty).cleanup()
        scheduled = ScheduledJobRegistry(queue=q, serializer=JSONSerializer)
        for job_id in scheduled.get_jobs_to_schedule(int(time.time())):
            with contextlib.suppress(InvalidJobOperation, NoSuchJobError):
                scheduled.requeue(job_id)


def work_left(r: Redis) -> bool:
    soon = time.time() + SOON
    for name in queue_names(r):
        q = Queue(name, connection=r, serializer=JSONSerializer)
        if q.count or StartedJobRegistry(queue=q).get_job_count(cleanup=False):
            return True
        if r.zcount(ScheduledJobRegistry(queue=q).key, 0, soon):
            return True
    return False


class ConnectorWorker(SimpleWorker):
    log_result_lifespan = False

    def __init__(self, redis: Redis, ctx: WorkerContext, burst: bool = False) -> None:
        super().__init__(queue_names(redis), connection=redis, serializer=JSONSerializer,
                         log_job_description=False, job_monitoring_interval=int(HEARTBEAT),
                         worker_ttl=60)
        self.ctx = ctx
        self.burst_mode = burst
        self._reaper = _Reaper(redis)

    # --- queues ----------------------------------------------------------------------

    @property
    def dequeue_timeout(self) -> int:
        return POLL

    def _refresh_queues(self) -> None:
        names = queue_names(self.connection)
        if set(names) == {q.name for q in self.queues}:
            return
        have = {q.name: q for q in self._ordered_queues}
        new = [Queue(n, connection=self.connection, serializer=self.serializer,
                     job_class=self.job_class) for n in names if n not in have]
        system = [q for q in self._ordered_queues if q.name == keys.system_queue()]
        kept = [q for q in self._ordered_queues
                if q.name in names and q.name != keys.system_queue()]
        self._ordered_queues = kept + new + system
        self.queues = sorted(kept + new, key=lambda q: q.name) + system

    def dequeue_job_and_maintain_ttl(self, timeout: int | None,
                                     max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        self.set_state(WorkerStatus.IDLE)
        wait = 1.0
        while True:
            try:
                self.heartbeat()
                self._refresh_queues()
                self.ctx.sessions.retire_idle()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                result = self.queue_class.dequeue_any(
                    self._ordered_queues, POLL, connection=self.connection,
                    job_class=self.job_class, serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class)
                if result is not None:
                    self.reorder_queues(reference_queue=result[1])
                    return result
            except DequeueTimeout:
                if self.burst_mode and not work_left(self.connection):
                    return None
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                self.log.error("Worker %s: Redis unavailable (%s); retrying in %.0f s",
                               self.name, e, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)

    # --- running a job ------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return STARTED_TTL

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        beat = _JobHeartbeat(self, job, execution)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            beat.stop()
        self.set_state(WorkerStatus.IDLE)

    # --- lifecycle ----------------------------------------------------------------------

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        self.burst_mode = self.burst_mode or burst
        context.install(self.ctx)
        self._reaper.start()
        try:
            # burst is handled by our dequeue loop (it also drains retries)
            return super().work(burst=False, dequeue_strategy=DequeueStrategy.ROUND_ROBIN,
                                **kwargs)
        finally:
            self._reaper.stop()
            self.ctx.sessions.close_all()
            context.install(None)


def run_one(burst: bool, logging_level: str = "INFO") -> int:
    r = connect()
    r.ping()
    w = ConnectorWorker(r, WorkerContext.from_env(r), burst=burst)
    w.work(logging_level=logging_level)
    return 0


def run_many(concurrency: int, burst: bool, logging_level: str = "INFO") -> int:
    """N worker processes (one job at a time each); signals are passed on to them."""
    if concurrency <= 1:
        return run_one(burst, logging_level)
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "1",
           "--log-level", logging_level, *(["--burst"] if burst else [])]
    children = [subprocess.Popen(cmd) for _ in range(concurrency)]

    def forward(signum: int, _: Any) -> None:
        for c in children:
            with contextlib.suppress(ProcessLookupError):
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(c.wait() for c in children)
