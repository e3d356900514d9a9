"""The per-tenant running cap's admission rule and leases, driven directly against a
real Redis (worker.queue.slots): what a worker decides when it holds a job it popped."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis.exceptions

pytestmark = pytest.mark.redis


@pytest.fixture
def tenants(redis_client, redis_prefix, monkeypatch):
    """Tenants `ta` and `tb` known to the workers, each capped at one running job."""
    from worker.settings import settings
    from worker.state import keys

    monkeypatch.setenv("CONNECTOR_MAX_TENANT_RUNNING", "1")
    settings.cache_clear()
    redis_client.sadd(keys.tenants(), "ta", "tb")
    yield
    settings.cache_clear()
    # This process's RQ keys (its default RQ prefix) name the test's prefix inside.
    stale = list(redis_client.scan_iter(match=f"rq:*{redis_prefix[0]}*", count=1000))
    if stale:
        redis_client.delete(*stale)


def _queue(r, tenant: str):
    from worker.queue.enqueue import tenant_queue

    return tenant_queue(r, tenant)


def _job(r, tenant: str, part: str, queued: bool = False):
    """A job of `tenant`'s (its id as the project names a refresh's jobs)."""
    from worker import naming

    job_id = naming.job_id(tenant, "c", "abc123", part)
    q = _queue(r, tenant)
    job = q.enqueue_call("builtins.len", args=[[]], job_id=job_id)
    if not queued:
        q.remove(job_id)
    return job


def _lease(r, tenant: str, job_id: str) -> float | None:
    from worker.state import keys

    return r.zscore(keys.tenant_running(tenant), job_id)


def test_a_lease_dropped_while_its_job_runs_is_back_after_the_next_heartbeat(
        redis_client, tenants):
    from worker.queue.slots import TenantSlots
    from worker.state import keys

    slots = TenantSlots(redis_client)
    job = _job(redis_client, "ta", "r0")
    assert slots.claim(_queue(redis_client, "ta"), job.id)
    # A long Redis stall outlived the lease: the entry is gone while the job still runs.
    redis_client.delete(keys.tenant_running("ta"))
    slots.renew()
    assert _lease(redis_client, "ta", job.id) is not None
    # With the count right again, the tenant is at its cap of one while tb waits.
    _job(redis_client, "tb", "r0", queued=True)
    assert not TenantSlots(redis_client).claim(_queue(redis_client, "ta"),
                                               _job(redis_client, "ta", "r1").id)


def test_a_heartbeat_after_the_job_ended_does_not_bring_its_lease_back(redis_client,
                                                                      tenants):
    from worker.queue.slots import TenantSlots

    slots = TenantSlots(redis_client)
    job = _job(redis_client, "ta", "r0")
    assert slots.claim(_queue(redis_client, "ta"), job.id)
    slots.release()
    slots.renew()
    assert _lease(redis_client, "ta", job.id) is None


def test_another_tenants_retry_waiting_for_its_backoff_holds_a_capped_tenant_back(
        redis_client, tenants):
    """tb's only pending job is a retry due in 5 s (RQ's scheduled registry, not its
    queue): ta, at its cap, must leave a worker for it rather than take every one."""
    from rq.registry import ScheduledJobRegistry

    from worker.queue.slots import TenantSlots

    ta = _queue(redis_client, "ta")
    assert TenantSlots(redis_client).claim(ta, _job(redis_client, "ta", "r0").id)
    retry = _job(redis_client, "tb", "r0")
    ScheduledJobRegistry(queue=_queue(redis_client, "tb")).schedule(
        retry, datetime.now(UTC) + timedelta(seconds=5))
    second = _job(redis_client, "ta", "r1")
    assert not TenantSlots(redis_client).claim(ta, second.id)
    # Refused, the job is back at the front of its queue, not lost.
    assert ta.get_job_ids()[:1] == [second.id]


def test_a_periodic_refresh_due_in_hours_does_not_hold_a_tenant_back(redis_client,
                                                                     tenants):
    from rq.registry import ScheduledJobRegistry

    from worker.queue.slots import TenantSlots

    ta = _queue(redis_client, "ta")
    assert TenantSlots(redis_client).claim(ta, _job(redis_client, "ta", "r0").id)
    later = _job(redis_client, "tb", "r0")
    ScheduledJobRegistry(queue=_queue(redis_client, "tb")).schedule(
        later, datetime.now(UTC) + timedelta(hours=2))
    assert TenantSlots(redis_client).claim(ta, _job(redis_client, "ta", "r1").id)


def test_a_finalize_is_admitted_while_the_tenants_reads_hold_its_slots(redis_client,
                                                                      tenants):
    """A finalize runs platform code only: held behind the tenant's other reads, a
    refresh whose fragments are all read would stay open as long as they run."""
    from worker.queue.slots import TenantSlots

    ta = _queue(redis_client, "ta")
    assert TenantSlots(redis_client).claim(ta, _job(redis_client, "ta", "r0").id)
    _job(redis_client, "tb", "r0", queued=True)  # tb waits
    # A read of ta's is refused (and its queue left out while a read is at its front) ...
    read = _job(redis_client, "ta", "r1")
    assert not TenantSlots(redis_client).claim(ta, read.id)
    assert ta.name not in {q.name for q in TenantSlots(redis_client).open_queues(
        [ta, _queue(redis_client, "tb")])}
    ta.remove(read.id)
    # ... but the finalize at the front of its queue is not, and it counts while it runs.
    fin = _job(redis_client, "ta", "fin", queued=True)
    assert ta.name in {q.name for q in TenantSlots(redis_client).open_queues(
        [ta, _queue(redis_client, "tb")])}
    ta.remove(fin.id)
    slots = TenantSlots(redis_client)
    assert slots.claim(ta, fin.id)
    assert _lease(redis_client, "ta", fin.id) is not None


def test_a_worker_whose_clock_runs_ahead_does_not_drop_other_workers_leases(
        redis_client, tenants, monkeypatch):
    from worker.queue import slots as slots_module
    from worker.queue.slots import TenantSlots

    ta = _queue(redis_client, "ta")
    held = _job(redis_client, "ta", "r0")
    assert TenantSlots(redis_client).claim(ta, held.id)
    _job(redis_client, "tb", "r0", queued=True)
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(slots_module.time, "time", lambda: real() + 3600)
        admitted = TenantSlots(redis_client).claim(ta, _job(redis_client, "ta", "r1").id)
    assert not admitted
    assert _lease(redis_client, "ta", held.id) is not None


def test_a_claim_whose_answer_is_lost_leaves_no_lease_and_the_job_queued(redis_client,
                                                                         tenants):
    """Redis ran the claim but the connection dropped before the answer came back: the
    worker does not know whether it holds a slot, so it gives both back."""
    from worker.queue.worker import ConnectorWorker

    w = ConnectorWorker(redis_client, None)  # type: ignore[arg-type]  # no job runs
    ta = _queue(redis_client, "ta")
    job = _job(redis_client, "ta", "r0")
    script = w.slots._claim

    def run_then_drop(*args, **kwargs):
        script(*args, **kwargs)
        raise redis.exceptions.ConnectionError("connection reset by peer")

    w.slots._claim = run_then_drop
    assert not w._claim(job, ta)
    assert _lease(redis_client, "ta", job.id) is None
    assert ta.get_job_ids() == [job.id]
