"""A per-tenant cap on running jobs: one tenant's long jobs cannot hold every worker
while another tenant's work waits (real Redis, real worker processes)."""

from __future__ import annotations

import pytest

from tests.helpers.connectors import PlanConnector
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis

SLEEP = 10  # seconds each of tenant A's fragments takes to read


def test_a_tenant_at_its_cap_leaves_a_worker_to_another_tenant(queue_env, tmp_path,
                                                               redis_client):
    from worker.state.redis import RedisState

    a = PlanConnector(tmp_path, "flood", "ta")
    a.set({f"f{i}": {"fp": "1", "rows": [i], "sleep": SLEEP} for i in range(6)})
    b = PlanConnector(tmp_path, "small", "tb")
    b.set({"x": {"fp": "1", "rows": [100]}})
    queue_env.deploy(a.folder)
    queue_env.deploy(b.folder)
    r = queue_env.cli("ceilings", "ta", "--running", "1")
    assert r.returncode == 0, r.stderr
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
    b = PlanConnector(tmp_path, "many", "tb")
    b.set({f"m{i:02d}": {"fp": "1", "rows": [i], "sleep": 1} for i in range(60)})
    queue_env.deploy(a.folder)
    queue_env.deploy(b.folder)
    r = queue_env.cli("ceilings", "ta", "--running", "1")
    assert r.returncode == 0, r.stderr

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
