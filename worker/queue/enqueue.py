"""Putting queue-mode work on RQ: one queue per tenant, plain ids as job arguments.

Job arguments are tenant, connector, refresh id, bundle hash and fragment names; the
fragments' fingerprints and metadata wait in Redis (worker.queue.tracker), credentials
never travel with a job. Jobs are serialized as JSON, not pickle.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from datetime import timedelta

from pydantic import BaseModel
from redis import Redis
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job
from rq.queue import EnqueueData
from rq.serializers import JSONSerializer

from worker import bundle_store, naming
from worker.models import RefreshRecord
from worker.registry import Deployment, get_deployment
from worker.settings import settings
from worker.state import keys
from worker.state.redis import RedisState

JOBS = "worker.queue.jobs"
RESULT_TTL = 3600
FAILURE_TTL = 7 * 86400


def retry_policy() -> Retry:
    """Infrastructure failures only (user-code failures never raise out of a job)."""
    intervals = list(settings().retry_intervals)
    return Retry(max=len(intervals), interval=intervals)


def batch_size(n: int) -> int:
    """Fragments per read job: small refreshes spread one per job across workers, big
    ones go in batches (fewer jobs, less queue overhead) of at most CONNECTOR_BATCH_MAX."""
    cap = settings().batch_max
    return max(1, min(cap, math.ceil(n / 32)))


def tenant_queue(redis: Redis, tenant: str) -> Queue:
    return Queue(keys.tenant_queue(tenant), connection=redis, serializer=JSONSerializer)


def _job_id(tenant: str, connector: str, refresh_id: str, part: str) -> str:
    return naming.job_id(tenant, connector, refresh_id, part)


def refresh_job_ids(tenant: str, connector: str, refresh_id: str, batches: int) -> list[str]:
    """Every job id a refresh can have: its list job, one per read batch, its finalize."""
    parts = ["list", *(f"r{i}" for i in range(batches)), "fin"]
    return [_job_id(tenant, connector, refresh_id, part) for part in parts]


def platform_only(job_id: str) -> bool:
    """Whether the job runs only the platform's code (a refresh's finalize, a periodic
    trigger), no tenant code: the tenant's running cap admits it whatever the tenant
    holds (worker.queue.slots)."""
    parts = job_id.split(naming.SEP)
    return parts[1:2] == ["sched"] or (parts[1:2] == ["run"] and parts[-1] == "fin")


def enqueue_list(redis: Redis, tenant: str, connector: str, refresh_id: str,
                 bundle: str, timeout: float) -> Job:
    return tenant_queue(redis, tenant).enqueue_call(
        f"{JOBS}.list_job", args=[tenant, connector, refresh_id, bundle],
        job_id=_job_id(tenant, connector, refresh_id, "list"), timeout=int(timeout) + 120,
        result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, retry=retry_policy(),
        on_failure=Callback(f"{JOBS}.on_list_failed"))


def split(names: list[str]) -> list[list[str]]:
    size = batch_size(len(names))
    return [names[i:i + size] for i in range(0, len(names), size)]


def enqueue_reads(redis: Redis, tenant: str, connector: str, refresh_id: str, bundle: str,
                  batches: list[list[str]], timeout: float) -> int:
    """One read job per planned batch; ids are deterministic (refresh id + batch index),
    so a retried list job enqueues only the batches not there yet."""
    q = tenant_queue(redis, tenant)
    ids = [_job_id(tenant, connector, refresh_id, f"r{i}") for i in range(len(batches))]
    # Which exist: one pipelined round trip, not one per batch (2,000 at 100,000 fragments).
    with redis.pipeline(transaction=False) as p:
        for job_id in ids:
            p.exists(Job.key_for(job_id))
        there = p.execute()
    datas: list[EnqueueData] = []
    for i, chunk in enumerate(batches):
        job_id = ids[i]
        if there[i]:
            continue
        datas.append(Queue.prepare_data(
            f"{JOBS}.read_job", args=[tenant, connector, refresh_id, bundle, chunk],
            job_id=job_id, timeout=int(timeout * len(chunk)) + 60, result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL, retry=retry_policy(),
            on_failure=Callback(f"{JOBS}.on_read_failed")))
    for i in range(0, len(datas), 200):
        q.enqueue_many(datas[i:i + 200])
    return len(datas)


def enqueue_finalize(redis: Redis, tenant: str, connector: str, refresh_id: str,
                     force: bool = False) -> None:
    """At most one finalize job per refresh (a second request is a no-op). `force`
    first deletes a finalize job that exists but will not run (the watchdog's rescue)."""
    job_id = _job_id(tenant, connector, refresh_id, "fin")
    if force:
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=redis, serializer=JSONSerializer).delete()
    with contextlib.suppress(DuplicateJobError):
        tenant_queue(redis, tenant).enqueue_call(
            f"{JOBS}.finalize_job", args=[tenant, connector, refresh_id],
            job_id=job_id, unique=True, at_front=True,
            timeout=600, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, retry=retry_policy(),
            on_failure=Callback(f"{JOBS}.on_finalize_failed"))


def arm_schedule(redis: Redis, d: Deployment) -> None:
    """The next periodic refresh, if the spec has a schedule and none is armed."""
    if d.spec.schedule is None:
        return
    from worker.state.keys import ConnectorKeys

    with contextlib.suppress(DuplicateJobError):
        tenant_queue(redis, d.tenant).enqueue_in(
            timedelta(seconds=d.spec.schedule.seconds), f"{JOBS}.scheduled_job",
            d.tenant, d.name, job_id=ConnectorKeys(d.tenant, d.name).schedule_job,
            unique=True, result_ttl=0, failure_ttl=FAILURE_TTL)


class RefreshHandle(BaseModel):
    id: str
    joined: bool  # True: a refresh of this connector was already running


def start_refresh(redis: Redis, tenant: str, name: str) -> RefreshHandle:
    """Start a queued refresh of a deployed connector, or join the running one."""
    from worker.queue.tracker import Tracker

    d = get_deployment(redis, tenant, name)  # NotDeployed for another tenant's name
    rid = uuid.uuid4().hex[:12]
    holder = Tracker(redis, tenant, name, rid).acquire()
    if holder is not None:
        return RefreshHandle(id=holder, joined=True)
    # The version this refresh runs stays stored until it closes (worker.bundle_store);
    # a deploy that deleted it before the pin landed left a newer one to run instead.
    while not bundle_store.pin(redis, tenant, name, d.bundle):
        fresh = get_deployment(redis, tenant, name)
        if fresh.bundle == d.bundle:
            break  # missing for another reason: the list job reports it
        d = fresh
    RedisState(redis, tenant, name).save_refresh(RefreshRecord(id=rid, started=time.time()))
    enqueue_list(redis, tenant, name, rid, d.bundle, d.spec.limits.timeout)
    return RefreshHandle(id=rid, joined=False)
