"""A per-tenant cap on running jobs: one tenant's long jobs cannot hold every worker
while another tenant's work waits (real Redis, real worker processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers.connectors import PlanConnector
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis

SLEEP = 10  # seconds each of tenant A's fragments takes to read
DIE_AFTER_CLAIM = """
from worker.queue.conn import connect
from worker.queue.enqueue import tenant_queue
from worker.queue.slots import TenantSlots

r = connect()
q = tenant_queue(r, "ta")
job_id = r.lpop(q.key).decode()
assert TenantSlots(r).claim(q, job_id)
"""


def _backlog(tmp_path) -> PlanConnector:
    """Tenant tb's connector of 60 one-second fragments: work queued for a while."""
    b = PlanConnector(tmp_path, "many", "tb")
    b.set({f"m{i:02d}": {"fp": "1", "rows": [i], "sleep": 1} for i in range(60)})
    return b


def _deploy_capped(queue_env, *connectors: PlanConnector) -> None:
    """Deploy `connectors`; tenant ta may run one job at once while another waits."""
    for c in connectors:
        queue_env.deploy(c.folder)
    r = queue_env.cli("ceilings", "ta", "--running", "1")
    assert r.returncode == 0, r.stderr


def test_a_tenant_at_its_cap_leaves_a_worker_to_another_tenant(queue_env, tmp_path,
                                                               redis_client):
    from worker.state.redis import RedisState

    a = PlanConnector(tmp_path, "flood", "ta")
    a.set({f"f{i}": {"fp": "1", "rows": [i], "sleep": SLEEP} for i in range(6)})
    b = PlanConnector(tmp_path, "small", "tb")
    b.set({"x": {"fp": "1", "rows": [100]}})
    _deploy_capped(queue_env, a, b)
    queue_env.start_workers(2)

    # Alone, tenant A may use both workers.
    queue_env.start("flood", "ta")
    wait_until(lambda: len(a.reads()) >= 2, 60, queue_env.logs, interval=0.1)

    # B's list, read and finalize jobs each find a worker as soon as one of A's jobs
    # ends (A stays at one running job while B has work queued), so B is done while
    # A still has fragments not even started. Without the cap, round-robin hands every
    # freed worker to A as often as to B, and A has started all six by then.
    rb, sb = queue_env.refresh("small", "tb", timeout=120)
    assert rb.returncode == 0, rb.stderr + queue_env.logs()
    assert sb["read"] == 1 and sb["failed"] == 0
    assert len(a.reads()) < 6, (a.reads(), queue_env.logs())

    # A's held-back jobs stayed queued and all ran: nothing lost, nothing failed.
    state = RedisState(redis_client, "ta", "flood")
    done = wait_until(lambda: [x for x in state.refreshes() if x.status != "running"],
                      120, queue_env.logs, interval=0.2)
    assert done[0].status == "ok", done[0]
    assert done[0].summary.read == 6 and done[0].summary.failed == 0
    assert sorted(a.reads()) == [f"f{i}" for i in range(6)]


def test_a_worker_killed_mid_job_does_not_keep_its_tenants_slot(queue_env, tmp_path,
                                                               redis_client):
    from worker.state.redis import RedisState

    fast = {"CONNECTOR_STARTED_TTL": "4", "CONNECTOR_HEARTBEAT": "1",
            "CONNECTOR_REAP_EVERY": "1"}
    a = PlanConnector(tmp_path, "one", "ta")
    a.set({"k": {"fp": "1", "rows": [1], "sleep": 600}})
    b = _backlog(tmp_path)
    _deploy_capped(queue_env, a, b)

    # A's only job is running when its worker is killed: its slot is taken, never given
    # back by that worker.
    doomed = queue_env.start_workers(1, env=fast)
    queue_env.start("one", "ta")
    wait_until(lambda: a.reads() == ["k"], 60, queue_env.logs, interval=0.1)
    queue_env.kill(doomed)
    a.set({"k": {"fp": "1", "rows": [1]}})  # the retry reads at once

    # B keeps both new workers busy with work queued for a while; A's retried job must
    # still get a worker then, its dead slot having lapsed.
    queue_env.start("many", "tb")
    queue_env.start_workers(2, env=fast)
    state = RedisState(redis_client, "ta", "one")
    done = wait_until(lambda: [x for x in state.refreshes() if x.status != "running"],
                      120, queue_env.logs, interval=0.2)
    assert len(b.reads()) < 60, (b.reads(), queue_env.logs())
    assert done[0].status == "ok" and done[0].summary.read == 1, done[0]


def _closed(state):
    return [x for x in state.refreshes() if x.status != "running"]


def _queued(redis_client, rq_prefix: str, tenant: str) -> int:
    """Jobs on a tenant's queue, as the workers (under this test's RQ prefix) see it."""
    from worker.state import keys

    return redis_client.llen(f"{rq_prefix}:queue:{keys.tenant_queue(tenant)}")


def test_a_refresh_of_a_capped_tenant_finishes_while_another_tenant_keeps_work_queued(
        queue_env, tmp_path, redis_client, redis_prefix):
    """Cap 1, several read batches and a finalize: the refresh's own jobs never wait on
    each other for its one slot, so it finishes long before the other tenant's backlog."""
    from worker.state.redis import RedisState

    a = PlanConnector(tmp_path, "batches", "ta")
    a.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(4)})
    b = _backlog(tmp_path)
    _deploy_capped(queue_env, a, b)
    queue_env.start_workers(2)
    queue_env.start("many", "tb")
    wait_until(lambda: b.reads(), 60, queue_env.logs, interval=0.1)

    ra, sa = queue_env.refresh("batches", "ta", timeout=120)
    assert ra.returncode == 0, ra.stderr + queue_env.logs()
    assert sa["read"] == 4 and sa["failed"] == 0, sa
    assert _queued(redis_client, redis_prefix[1], "tb"), (b.reads(), queue_env.logs())
    state = RedisState(redis_client, "tb", "many")
    done = wait_until(lambda: _closed(state), 120, queue_env.logs, interval=0.2)
    assert done[0].status == "ok" and done[0].summary.read == 60, done[0]


def test_a_read_refresh_is_committed_while_the_tenants_other_reads_hold_its_slots(
        queue_env, tmp_path, redis_client, redis_prefix):
    """Tenant ta (cap 1) has two refreshes reading; tb has a backlog. When one of ta's
    refreshes has read everything, its finalize (platform code only) runs at once, not
    after ta's other read or tb's whole backlog."""
    from worker.state.redis import RedisState

    hold_gate, done_gate = tmp_path / "hold.gate", tmp_path / "done.gate"
    hold = PlanConnector(tmp_path, "hold", "ta")
    hold.set({"h": {"fp": "1", "rows": [1], "gate": str(hold_gate)}})
    quick = PlanConnector(tmp_path, "quick", "ta")
    quick.set({"q": {"fp": "1", "rows": [2], "gate": str(done_gate)}})
    b = _backlog(tmp_path)
    _deploy_capped(queue_env, hold, quick, b)
    queue_env.start_workers(3)

    # Alone, ta runs both reads at once; then tb's backlog arrives.
    queue_env.start("hold", "ta")
    queue_env.start("quick", "ta")
    wait_until(lambda: hold.reads() and quick.reads(), 60, queue_env.logs, interval=0.1)
    queue_env.start("many", "tb")
    wait_until(lambda: b.reads(), 60, queue_env.logs, interval=0.1)

    done_gate.touch()  # quick's last read ends: its refresh has only its commit left
    state = RedisState(redis_client, "ta", "quick")
    closed = wait_until(lambda: _closed(state), 120, queue_env.logs, interval=0.1)
    # tb's backlog is still queued: the commit did not wait for it to drain.
    assert _queued(redis_client, redis_prefix[1], "tb"), (b.reads(), queue_env.logs())
    assert closed[0].status == "ok" and closed[0].summary.read == 1, closed[0]
    assert not _closed(RedisState(redis_client, "ta", "hold"))

    hold_gate.touch()
    held = wait_until(lambda: _closed(RedisState(redis_client, "ta", "hold")), 120,
                      queue_env.logs, interval=0.2)
    assert held[0].status == "ok" and held[0].summary.read == 1, held[0]


def test_a_job_whose_worker_died_between_its_claim_and_its_start_runs(
        queue_env, tmp_path, redis_client):
    """A worker popped the job and took its tenant's slot, then was SIGKILLed before RQ
    recorded the job as started: no queue and no started registry holds the job, only
    its lease does. When the lease lapses the job goes back on its queue and runs."""
    from tests.helpers.timing import LEASES, fast
    from worker.state.redis import RedisState

    a = PlanConnector(tmp_path, "lost", "ta")
    a.set({"x": {"fp": "1", "rows": [1]}, "y": {"fp": "1", "rows": [2]}})
    queue_env.deploy(a.folder)
    queue_env.start("lost", "ta")

    # A worker that pops the list job, claims its slot and dies before starting it.
    subprocess.run([sys.executable, "-c", DIE_AFTER_CLAIM], cwd=ROOT, check=True,
                   env={**queue_env.env, "CONNECTOR_STARTED_TTL": "3"}, timeout=60)

    queue_env.start_workers(1, env=fast(LEASES))
    state = RedisState(redis_client, "ta", "lost")
    done = wait_until(lambda: _closed(state), 60, queue_env.logs, interval=0.2)
    assert done[0].status == "ok" and done[0].summary.read == 2, done[0]
    assert sorted(a.reads()) == ["x", "y"]


def test_a_running_jobs_lease_lost_in_a_redis_stall_is_back_after_its_heartbeat(
        queue_env, tmp_path, redis_client):
    """The lease key is gone while a read runs (a stall longer than the lease, or the key
    lost): the job's next heartbeat puts it back, so its tenant counts it again."""
    from tests.helpers.timing import LEASES, fast
    from worker.state import keys
    from worker.state.redis import RedisState

    gate = tmp_path / "long.gate"
    a = PlanConnector(tmp_path, "long", "ta")
    a.set({"k": {"fp": "1", "rows": [1], "gate": str(gate)}})
    queue_env.deploy(a.folder)
    queue_env.start_workers(1, env=fast(LEASES))
    queue_env.start("long", "ta")
    wait_until(lambda: a.reads() == ["k"], 60, queue_env.logs, interval=0.1)
    key = keys.tenant_running("ta")
    [held] = wait_until(lambda: redis_client.zrange(key, 0, -1), 30, queue_env.logs)

    redis_client.delete(key)
    wait_until(lambda: redis_client.zscore(key, held) is not None, 30, queue_env.logs)

    gate.touch()
    state = RedisState(redis_client, "ta", "long")
    done = wait_until(lambda: _closed(state), 60, queue_env.logs, interval=0.2)
    assert done[0].status == "ok" and done[0].summary.read == 1, done[0]
    wait_until(lambda: not redis_client.exists(key), 30, queue_env.logs)
