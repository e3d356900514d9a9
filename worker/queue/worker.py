"""The queue-mode worker: an RQ SimpleWorker on every tenant's queue, and what it
overrides in RQ.

- No fork per job (SimpleWorker): jobs run in this process, so sandbox sessions stay
  warm between jobs (worker.queue.sessions), keyed by tenant, connector and version.
- Fairness: one queue per tenant, dequeued round-robin; the list of tenant queues is
  re-read from Redis while idle, so a newly deployed tenant is served within a second.
- Per-tenant cap: while another tenant has work pending, a tenant runs at most its
  `running` ceiling of tenant-code jobs at once (worker.queue.slots); a job over it
  stays queued.
- Dead workers: SimpleWorker sends no heartbeat while a job runs. Here a thread
  heartbeats the running job every HEARTBEAT s with a short entry TTL (STARTED_TTL), so
  the reaper (worker.queue.reaper) finds the job of a worker that died soon after.
- Redis blips: RQ's work loop quits on any exception it does not expect, a Redis
  ConnectionError included. Here every Redis call of the loop waits for Redis to come
  back (worker.backoff, 1 s doubling to 30 s) instead; a job whose outcome could not be
  recorded is handed to RQ's failure path once Redis answers (retried with backoff, as
  any infrastructure failure), and a job dequeued but not yet started is put back.
  Should the loop end anyway, worker.queue.supervisor starts a new one.
- `--burst` quits when no tenant queue holds work and nothing is running, abandoned or
  due for a retry soon: it drains retries too, which RQ's own burst mode would not.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis.exceptions
from redis import Redis
from rq import Queue
from rq.callbacks import execute_failure_callback
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import format_exc_info
from rq.serializers import JSONSerializer
from rq.worker import DequeueStrategy, SimpleWorker, WorkerStatus

from worker.backoff import Backoff
from worker.queue import context
from worker.queue.backlog import queue_names, work_left
from worker.queue.conn import REDIS_DOWN
from worker.queue.context import WorkerContext
from worker.queue.reaper import Reaper
from worker.queue.slots import TenantSlots
from worker.settings import settings
from worker.state import keys

HEARTBEAT = settings().heartbeat
STARTED_TTL = settings().started_ttl
POLL = 1  # seconds a dequeue blocks before re-reading tenants
log = logging.getLogger(__name__)


class _JobHeartbeat(threading.Thread):
    def __init__(self, worker: ConnectorWorker, job: Job, execution: Any) -> None:
        super().__init__(daemon=True, name="job-heartbeat")
        self._w, self._job, self._execution = worker, job, execution
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(HEARTBEAT):
            with contextlib.suppress(redis.exceptions.RedisError):
                self._w.maintain_heartbeats(self._job, self._execution)
            with contextlib.suppress(redis.exceptions.RedisError):
                self._w.slots.renew()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class ConnectorWorker(SimpleWorker):
    log_result_lifespan = False

    def __init__(self, redis: Redis, ctx: WorkerContext, burst: bool = False) -> None:
        super().__init__(queue_names(redis), connection=redis, serializer=JSONSerializer,
                         log_job_description=False, job_monitoring_interval=int(HEARTBEAT),
                         worker_ttl=60)
        self.ctx = ctx
        self.burst_mode = burst
        self.drained = False   # burst mode found no work left
        self.stopping = False  # a stop signal arrived
        self._reaper = Reaper(redis)
        self.slots = TenantSlots(redis)

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
        while True:
            try:
                self.set_state(WorkerStatus.IDLE)
                self.heartbeat()
                self._refresh_queues()
                self.ctx.sessions.retire_idle()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                result = self.queue_class.dequeue_any(
                    self.slots.open_queues(self._ordered_queues), POLL,
                    connection=self.connection, job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class)
                if result is not None:
                    self.reorder_queues(reference_queue=result[1])
                    if self._claim(*result):
                        return result
            except DequeueTimeout:
                if self.burst_mode and not work_left(self.connection):
                    self.drained = True
                    return None
            except REDIS_DOWN as e:
                self.await_redis("dequeue", e)

    def _claim(self, job: Job, queue: Queue) -> bool:
        """A slot of the job's tenant, or the job back at the front of its queue (the
        refusing claim puts it there)."""
        try:
            return self.slots.claim(queue, job.id)
        except REDIS_DOWN as e:
            self.await_redis(f"the slot of job {job.id}", e)
        # The claim may have run with its answer lost: give back the lease and the job.
        while True:
            try:
                self.slots.give_back(queue, job.id)
                return False
            except REDIS_DOWN as e:
                if self.stopping:  # its lease, if any, lapses and the reaper requeues
                    return False
                self.await_redis(f"the slot of job {job.id}", e)

    # --- Redis blips ----------------------------------------------------------------

    def await_redis(self, during: str, error: BaseException) -> None:
        """Block until Redis answers a PING (worker.backoff). A stop
        request ends the wait: when idle, RQ's signal handler raises StopRequested."""
        log.error("Worker %s: Redis unavailable during %s (%s); waiting for it",
                  self.name, during, error)
        backoff = Backoff()
        while not self.stopping:
            time.sleep(backoff.delay)
            try:
                self.connection.ping()
            except REDIS_DOWN as e:
                log.warning("Worker %s: Redis still unavailable (%s); next try in %.0f s",
                            self.name, e, backoff.grow())
                continue
            log.warning("Worker %s: Redis is back", self.name)
            return

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN as e:
            self.await_redis("the suspension check", e)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except REDIS_DOWN as e:
            self.await_redis("maintenance", e)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            super().heartbeat(timeout)
        except REDIS_DOWN as e:
            log.warning("Worker %s: heartbeat failed (%s)", self.name, e)

    def set_shutdown_requested_date(self) -> None:
        # Called from the SIGTERM handler while a job runs: must not raise into the job.
        with contextlib.suppress(*REDIS_DOWN):
            super().set_shutdown_requested_date()

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        super().request_stop(signum, frame)

    # --- running a job ------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return STARTED_TTL

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution: Execution | None = None
        beat: _JobHeartbeat | None = None
        try:
            execution = self.prepare_execution(job)
            beat = _JobHeartbeat(self, job, execution)
            beat.start()
            self.perform_job(job, queue, execution)
        except REDIS_DOWN as e:
            # Raised by RQ's own bookkeeping around the job (the job's Redis errors are
            # handled by perform_job): its outcome is not recorded.
            if beat is not None:
                beat.stop()
                beat = None
            self.await_redis(f"job {job.id}", e)
            self._recover(job, queue, execution, e)
        finally:
            if beat is not None:
                beat.stop()
            with contextlib.suppress(*REDIS_DOWN):
                self.slots.release()  # else its lease lapses after STARTED_TTL
        with contextlib.suppress(*REDIS_DOWN):
            self.set_state(WorkerStatus.IDLE)

    def _recover(self, job: Job, queue: Queue, execution: Execution | None,
                 error: BaseException) -> None:
        """After a blip: a job dequeued but never started goes back on its queue; a
        started one still registered as ours goes through RQ's failure path now (retry
        with backoff, or its failure callback when out of retries) rather than after
        its lease lapses. Jobs are idempotent, so a job that had in fact finished may
        run again harmlessly."""
        try:
            if execution is None:
                queue.enqueue_job(job, at_front=True)
                log.warning("Worker %s: job %s put back on %s", self.name, job.id,
                                 queue.name)
                return
            registry = queue.started_job_registry
            if self.connection.zscore(registry.key, execution.composite_key) is None:
                return  # the reaper has already handled it
            exc_info = (type(error), error, error.__traceback__)
            try:
                execute_failure_callback(job, self.death_penalty_class, *exc_info)
            except Exception:
                log.exception("Worker %s: failure callback of %s raised", self.name,
                                   job.id)
            self.handle_job_failure(job, queue, started_job_registry=registry,
                                    exc_string=format_exc_info(exc_info),
                                    execution=execution)
            log.warning("Worker %s: job %s interrupted by a Redis blip: %s", self.name,
                             job.id, "retrying" if job.should_retry else "failed")
        except REDIS_DOWN as e:  # down again: the reaper retries it when its lease lapses
            log.error("Worker %s: could not recover job %s (%s)", self.name, job.id, e)

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

