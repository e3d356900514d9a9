"""Queue mode against a real Redis and real worker processes (process sandbox)."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from tests.conftest import table_files
from tests.helpers.connectors import PlanConnector, ids
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis


def test_queued_refresh_equals_local_and_is_incremental(queue_env, cli, tmp_path):
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({f"2026/{i:02d}.csv": {"fp": "1", "rows": [i, 100 + i]} for i in range(8)})
    queue_env.deploy(c.folder)
    queue_env.start_workers(2)

    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s == {"listed": 8, "read": 8, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 16,
                 "rejected": 0, "defaulted": 0}
    queued = sorted(queue_env.rows("plan", "acme"), key=lambda x: x["id"])

    lr, ls = cli.refresh(c.folder)  # the same connector, local mode
    assert lr.returncode == 0, lr.stderr
    assert ls == s
    assert queued == sorted(cli.rows(c.folder), key=lambda x: x["id"])

    # unchanged: nothing is read
    reads_before = len(c.reads())
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr
    assert (s["read"], s["skipped"], s["listed"]) == (0, 8, 8)
    assert len(c.reads()) == reads_before

    # one changes, one leaves, one arrives
    plan = {f"2026/{i:02d}.csv": {"fp": "1", "rows": [i, 100 + i]} for i in range(1, 8)}
    plan["2026/05.csv"] = {"fp": "2", "rows": [55]}
    plan["2026/99.csv"] = {"fp": "1", "rows": [99]}
    c.set(plan)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr
    assert s == {"listed": 8, "read": 2, "skipped": 6, "recovered": 0, "deleted": 1, "failed": 0,
                 "rows": 2,
                 "rejected": 0, "defaulted": 0}
    got = ids(queue_env.rows("plan", "acme"))
    assert got == sorted([i for i in range(1, 8) if i != 5] + [100 + i for i in range(1, 8)
                                                              if i != 5] + [55, 99])
    # one file per committed fragment in the table: replaced and deleted versions left it
    assert len(table_files(queue_env.output, "acme", "plan")) == 8

    st = queue_env.cli("status", "plan", "--tenant", "acme")
    assert st.returncode == 0, st.stderr
    assert "8 fragment(s)" in st.stdout


def _failing_refresh(queue_env, tmp_path, name: str, names: list[str], failing: str):
    """One worker refreshes `names` (fragment i has the row i), of which `failing`
    raises; the refresh fails. Returns the connector, its plan and the refresh's result."""
    c = PlanConnector(tmp_path, name, "acme")
    plan = {n: {"fp": "1", "rows": [i]} for i, n in enumerate(names)}
    plan[failing] = {"fp": "1", "rows": "FAIL"}
    c.set(plan)
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh(name, "acme")
    assert r.returncode == 1, r.stderr + queue_env.logs()
    return c, plan, r, s


def test_user_failure_fails_refresh_without_retry_then_fix_completes(queue_env, tmp_path,
                                                                      redis_client):
    c, plan, r, s = _failing_refresh(queue_env, tmp_path, "flaky", [f"f{i}" for i in range(6)],
                                     "f3")
    # one worker, one fragment per job, in listing order: f3 fails, f4 and f5 never start
    assert s == {"listed": 6, "read": 3, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 1,
                 "rows": 3,
                 "rejected": 0, "defaulted": 0}
    assert "remote said no for f3" in r.stderr
    assert "RuntimeError" in r.stderr and "connector.py" in r.stderr
    assert c.reads().count("f3") == 1 and "f4" not in c.reads()
    # not retried: the read job ended normally; nothing waits in a retry schedule
    _, rq_prefix = queue_env.env["CONNECTOR_REDIS_PREFIX"], queue_env.env["RQ_KEY_PREFIX"]
    assert not list(redis_client.scan_iter(match=f"{rq_prefix}:scheduled:*"))
    time.sleep(6)  # longer than the first retry interval
    assert c.reads().count("f3") == 1

    st = queue_env.cli("status", "flaky", "--tenant", "acme")
    assert st.returncode == 0
    assert "failed" in st.stdout
    assert "remote said no for f3" in st.stderr and "reading f3" in st.stderr  # tb + log

    plan["f3"] = {"fp": "1", "rows": [3]}
    c.set(plan)
    r, s = queue_env.refresh("flaky", "acme")
    assert r.returncode == 0, r.stderr
    assert s == {"listed": 6, "read": 3, "skipped": 3, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 3,
                 "rejected": 0, "defaulted": 0}
    assert ids(queue_env.rows("flaky", "acme")) == [0, 1, 2, 3, 4, 5]


def test_a_failure_inside_a_batch_names_its_fragment_and_a_rerun_reads_the_rest_once(
        queue_env, tmp_path):
    # 100 fragments go in read jobs of 4, read pipelined through one session; f041 is
    # the second of its batch.
    c, plan, r, s = _failing_refresh(queue_env, tmp_path, "batched",
                                     [f"f{i:03d}" for i in range(100)], "f041")
    assert "f041" in r.stderr and "remote said no for f041" in r.stderr
    first = c.reads()
    assert first.count("f041") == 1 and len(set(first)) == len(first)
    # the batches before it were read; none after its own batch (f040-f043) started
    assert {f"f{i:03d}" for i in range(41)} <= set(first) <= {f"f{i:03d}" for i in range(44)}
    assert s["failed"] == 1 and s["read"] == s["rows"] == len(first) - 1

    plan["f041"] = {"fp": "1", "rows": [41]}
    c.set(plan)
    r, s = queue_env.refresh("batched", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert (s["read"], s["skipped"], s["failed"]) == (101 - len(first), len(first) - 1, 0)
    reads = c.reads()
    assert sorted(set(reads)) == sorted(plan) and len(reads) == 101  # f041 twice, rest once
    assert ids(queue_env.rows("batched", "acme")) == list(range(100))


def test_tenants_are_isolated(queue_env, tmp_path, redis_client):
    a = PlanConnector(tmp_path, "shared", "ta")
    b = PlanConnector(tmp_path, "shared", "tb")
    a.set({"x": {"fp": "1", "rows": [1, 2]}})
    b.set({"x": {"fp": "1", "rows": [100]}})
    only_a = PlanConnector(tmp_path, "only-a", "ta")
    only_a.set({"y": {"fp": "1", "rows": [7]}})
    for c in (a, b, only_a):
        queue_env.deploy(c.folder)
    queue_env.start_workers(1)

    for tenant in ("ta", "tb"):
        r, s = queue_env.refresh("shared", tenant)
        assert r.returncode == 0, r.stderr + queue_env.logs()
    assert ids(queue_env.rows("shared", "ta")) == [1, 2]
    assert ids(queue_env.rows("shared", "tb")) == [100]

    # tenant tb cannot reach ta's connector: not show, not refresh, not status
    for args in (("show", "only-a", "--tenant", "tb"),
                 ("refresh", "only-a", "--tenant", "tb", "--queue"),
                 ("status", "only-a", "--tenant", "tb")):
        r = queue_env.cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "no connector 'tb/only-a'" in r.stderr

    # nor through the Python API
    from worker.queue.client import TenantClient
    from worker.registry import DeployError, NotDeployed

    tb = TenantClient(redis_client, "tb")
    with pytest.raises(NotDeployed):
        tb.committed("only-a")
    with pytest.raises(NotDeployed):
        tb.refresh("only-a")
    with pytest.raises(DeployError, match="belongs to tenant 'ta'"):
        tb.deploy(only_a.folder)

    # every key of a connector is under its tenant; outputs are separate trees
    prefix = queue_env.env["CONNECTOR_REDIS_PREFIX"]
    for k in redis_client.scan_iter(match=f"{prefix}:*shared*"):
        assert k.decode().startswith((f"{prefix}:ta:shared:", f"{prefix}:tb:shared:")), k
    assert (queue_env.output / "ta" / "shared").is_dir()
    assert (queue_env.output / "tb" / "shared").is_dir()


def test_second_refresh_joins_the_running_one(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "slow", "acme")
    c.set({f"s{i}": {"fp": "1", "rows": [i], "sleep": 0.5} for i in range(4)})
    queue_env.deploy(c.folder)
    first = queue_env.start("slow", "acme")
    second = queue_env.cli("refresh", "slow", "--tenant", "acme", "--queue")
    assert second.returncode == 0
    assert second.stdout.strip() == first
    assert f"joining {first}" in second.stderr
    queue_env.start_workers(1)
    r, s = queue_env.refresh("slow", "acme")
    assert r.returncode == 0, r.stderr
    assert s["read"] == 4 and len(c.reads()) == 4  # one refresh ran, not two
    # the lock is released at finalize: a new refresh starts (and reads nothing)
    r, s = queue_env.refresh("slow", "acme")
    assert "joining" not in r.stderr and s["skipped"] == 4


def test_schedule_refreshes_periodically(queue_env, tmp_path, redis_client):
    from worker.state.redis import RedisState

    c = PlanConnector(tmp_path, "ticker", "acme", extra_spec="schedule: {every: 2s}\n")
    c.set({"a": {"fp": "1", "rows": [1]}})
    queue_env.deploy(c.folder)  # arms the first run; each finalize arms the next
    queue_env.start_workers(1)
    state = RedisState(redis_client, "acme", "ticker")
    wait_until(lambda: len([r for r in state.refreshes() if r.status == "ok"]) >= 2, 40,
               queue_env.logs, interval=0.2)
    done = [r for r in state.refreshes() if r.status == "ok"]
    assert done[-1].summary.read == 1 and done[0].summary.skipped == 1
    assert ids(queue_env.rows("ticker", "acme")) == [1]


def test_queued_refresh_counts_and_keeps_rejects(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "rej", "acme")
    (c.folder / "connector.yaml").write_text(
        "name: rej\ntenant: acme\nschema:\n  on_invalid: skip\n  max_errors: 5\n"
        "  columns:\n    - {name: id, type: int64}\n    - {name: frag, type: string}\n")
    c.set({"a": {"fp": "1", "rows": [1, "x", 2]}, "b": {"fp": "1", "rows": [3]}})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("rej", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert (s["rows"], s["rejected"], s["defaulted"]) == (3, 1, 0)
    (kept,) = (queue_env.output / "acme" / "rej" / "_rejects").glob("*.parquet")
    assert pq.read_table(kept).select(["fragment", "row", "value"]).to_pylist() == [
        {"fragment": "a", "row": 2, "value": "x"}]
    status = queue_env.cli("status", "rej", "--tenant", "acme", env={"COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "rejected" in status.stdout


def test_a_refresh_no_worker_picked_up_shows_as_queued(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "waiting", "acme")
    c.set({"a.csv": {"fp": "1", "rows": [1]}})
    queue_env.deploy(c.folder)
    refresh_id = queue_env.start("waiting", "acme")  # no worker runs yet

    st = queue_env.cli("status", "waiting", "--tenant", "acme")
    assert st.returncode == 0, st.stderr
    line = next(ln for ln in st.stdout.splitlines() if refresh_id in ln)
    assert "queued" in line and "running" not in line, st.stdout

    queue_env.start_workers(1)
    r, s = queue_env.refresh("waiting", "acme")  # joins the queued refresh
    assert r.returncode == 0 and s["read"] == 1, r.stderr + queue_env.logs()
    st = queue_env.cli("status", "waiting", "--tenant", "acme")
    line = next(ln for ln in st.stdout.splitlines() if refresh_id in ln)
    assert "ok" in line and "queued" not in line, st.stdout
