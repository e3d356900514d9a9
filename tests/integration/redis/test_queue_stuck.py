"""Stuck refreshes: a refresh whose jobs vanished is failed and its lock released (by
the watchdog in the workers' reaper), so the next refresh runs."""

from __future__ import annotations

import time

import pytest

from tests.helpers.connectors import PlanConnector, ids
from tests.helpers.timing import WATCHDOG, fast
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis

WATCH = fast(WATCHDOG)


def test_refresh_whose_queued_jobs_vanished_fails_with_reason_and_unlocks(
        queue_env, tmp_path, redis_client):
    from worker.state import keys

    n = 6
    c = PlanConnector(tmp_path, "stuck", "acme")
    c.set({f"s{i}": {"fp": "1", "rows": [i], "sleep": 1.0} for i in range(n)})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1, env=WATCH)
    rid = queue_env.start("stuck", "acme")
    wait_until(c.reads, 60, queue_env.logs)  # the first read job runs; five are queued

    # delete the refresh's queued jobs behind its back (as a lost write would)
    rq_prefix = queue_env.env["RQ_KEY_PREFIX"]
    queue_key = f"{rq_prefix}:queue:{keys.tenant_queue('acme')}"
    queued = [j.decode() for j in redis_client.lrange(queue_key, 0, -1)]
    assert len(queued) == n - 1 and all(rid in j for j in queued), queued
    redis_client.delete(queue_key, *[f"{rq_prefix}:job:{j}" for j in queued])

    t0 = time.monotonic()
    r, s = queue_env.refresh("stuck", "acme", timeout=60)  # joins, and sees it fail
    took = time.monotonic() - t0
    assert f"joining {rid}" in r.stderr
    assert r.returncode == 1, r.stderr + queue_env.logs()
    assert took < 20, took
    assert s == {"listed": n, "read": 1, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 1,
                 "rows": 1,
                 "rejected": 0, "defaulted": 0}
    assert "refresh stalled: none of its jobs is queued, running or scheduled" in r.stderr
    assert f"with {n - 1} fragment(s) still unread" in r.stderr
    assert not redis_client.exists(f"{queue_env.env['CONNECTOR_REDIS_PREFIX']}:acme:stuck:lock")

    st = queue_env.cli("status", "stuck", "--tenant", "acme")
    assert st.returncode == 0 and "failed" in st.stdout
    assert "refresh stalled" in st.stderr

    # the lock was released: the next refresh is a new one, and reads what was left;
    # the fragment the stalled one read is committed now, and counted as recovered (as
    # a local refresh counts what an interrupted one kept), not as skipped
    r, s = queue_env.refresh("stuck", "acme", timeout=60)
    assert "joining" not in r.stderr
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s == {"listed": n, "read": n - 1, "skipped": 0, "recovered": 1, "deleted": 0,
                 "failed": 0, "rows": n - 1, "rejected": 0, "defaulted": 0}
    assert ids(queue_env.rows("stuck", "acme")) == list(range(n))
    assert sorted(c.reads()) == [f"s{i}" for i in range(n)]  # none read twice


def test_lost_finalize_job_is_reenqueued_and_the_refresh_closes(queue_env, tmp_path,
                                                                redis_client):
    """Every fragment accounted for, but no finalize job: the watchdog enqueues it again
    rather than failing a refresh that did all its work."""
    from worker import naming
    from worker.listing import Listing
    from worker.queue.tracker import Tracker
    from worker.state import keys

    c = PlanConnector(tmp_path, "nofin", "acme")
    c.set({"f0": {"fp": "1", "rows": [0]}})
    queue_env.deploy(c.folder)
    rid = queue_env.start("nofin", "acme")  # no worker yet: its list job waits
    # The list job is lost after planning nothing to read, before enqueueing finalize.
    rq_prefix = queue_env.env["RQ_KEY_PREFIX"]
    queue_key = f"{rq_prefix}:queue:{keys.tenant_queue('acme')}"
    (list_job,) = [j.decode() for j in redis_client.lrange(queue_key, 0, -1)]
    assert list_job == naming.job_id("acme", "nofin", rid, "list")
    redis_client.delete(queue_key, f"{rq_prefix}:job:{list_job}")
    Tracker(redis_client, "acme", "nofin", rid).plan(Listing.of([]), [], [])

    worker = queue_env.start_workers(1, env=WATCH)
    r, s = queue_env.refresh("nofin", "acme", timeout=60)
    assert f"joining {rid}" in r.stderr
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s["failed"] == 0
    logs = "".join(log.read_text() for _, log in queue_env.workers)
    assert "finalize job was lost: re-enqueued" in logs
    assert worker.poll() is None
    r, s = queue_env.refresh("nofin", "acme", timeout=60)  # unlocked: a new refresh
    assert "joining" not in r.stderr and r.returncode == 0 and s["read"] == 1


def test_a_refresh_waiting_on_its_queue_keeps_its_connectors_lock(queue_env, tmp_path,
                                                                 redis_client):
    """A refresh's jobs extend its connector's lock only while they run; one whose jobs
    wait on the queue (every worker busy, or its tenant at its running cap) long enough
    for the lock to lapse must still own the connector: the next refresh joins it
    rather than starting a second refresh of the same connector beside it."""
    from worker.state.keys import ConnectorKeys
    from worker.state.redis import RedisState

    gate = tmp_path / "busy.gate"
    busy = PlanConnector(tmp_path, "busy", "ta")
    busy.set({"b": {"fp": "1", "rows": [1], "gate": str(gate)}})
    waiting = PlanConnector(tmp_path, "waiting", "ta")
    waiting.set({"w": {"fp": "1", "rows": [2]}})
    queue_env.deploy(busy.folder)
    queue_env.deploy(waiting.folder)
    queue_env.start_workers(1, env=WATCH)
    queue_env.start("busy", "ta")
    wait_until(lambda: busy.reads(), 60, queue_env.logs, interval=0.1)

    first = queue_env.start("waiting", "ta")  # its list job waits: the one worker is busy
    lock = ConnectorKeys("ta", "waiting").lock
    assert redis_client.get(lock) == first.encode()
    redis_client.delete(lock)  # its TTL ran out while the job waited
    wait_until(lambda: redis_client.get(lock), 30, queue_env.logs)
    assert queue_env.start("waiting", "ta") == first

    gate.touch()
    state = RedisState(redis_client, "ta", "waiting")
    done = wait_until(lambda: [x for x in state.refreshes() if x.status != "running"],
                      120, queue_env.logs, interval=0.2)
    assert [x.id for x in state.refreshes()] == [first]
    assert done[0].status == "ok" and done[0].summary.read == 1, done[0]
