"""One dataset, one state store: a local refresh and queue-mode workers never both write
into the same dataset folder.

Each keeps its own index of committed fragments (SQLite beside the table, or Redis), so
the other one would read every fragment again and add its rows a second time. With the
default output (`./data` for both `connector refresh` and `make worker` run from the
project folder) that is what a user gets by trying both modes on one connector.
"""

from __future__ import annotations

import pytest

from tests.helpers.connectors import PlanConnector, ids

pytestmark = pytest.mark.redis


def _local_refresh(queue_env, folder):
    # the local CLI writing where the workers write (queue_env's CONNECTOR_OUTPUT)
    return queue_env.cli("refresh", str(folder), "--json", "--sandbox", "process")


def _local_rows(queue_env, folder) -> list[int]:
    import json

    r = queue_env.cli("show", str(folder), "--jsonl", "--limit", "1000000")
    assert r.returncode == 0, r.stderr
    return ids([json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()])


def test_workers_refuse_a_local_refreshs_dataset_and_add_nothing(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(3)})
    r = _local_refresh(queue_env, c.folder)
    assert r.returncode == 0, r.stderr
    assert _local_rows(queue_env, c.folder) == [0, 1, 2]

    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 1, r.stdout + r.stderr + queue_env.logs()
    assert s["failed"] == 1 and s["read"] == 0
    # names the folder, whose state it holds, and what to do
    assert "acme/plan" in r.stderr and "_connector/state.sqlite" in r.stderr, r.stderr
    assert "CONNECTOR_OUTPUT" in r.stderr, r.stderr
    assert _local_rows(queue_env, c.folder) == [0, 1, 2]  # nothing duplicated
    assert len(c.reads()) == 3  # nothing read again
    # nor are the local refresh's rows shown as the deployed connector's
    r = queue_env.cli("show", "plan", "--tenant", "acme")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "_connector/state.sqlite" in r.stderr and "CONNECTOR_OUTPUT" in r.stderr, r.stderr


def test_a_local_refresh_refuses_the_workers_dataset_and_adds_nothing(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(3)})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert ids(queue_env.rows("plan", "acme")) == [0, 1, 2]

    r = _local_refresh(queue_env, c.folder)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "acme/plan" in r.stderr and "--queue" in r.stderr and "--output" in r.stderr, (
        r.stderr)
    assert ids(queue_env.rows("plan", "acme")) == [0, 1, 2]
    assert len(c.reads()) == 3
    # showing the dataset from the folder does not make it look like a local one
    assert _local_rows(queue_env, c.folder) == [0, 1, 2]
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert ids(queue_env.rows("plan", "acme")) == [0, 1, 2]


def test_a_local_commit_landing_while_the_workers_read_is_not_duplicated(queue_env, tmp_path,
                                                                         redis_client):
    """The workers' check runs when their refresh lists; a local refresh into the same
    folder may commit while their reads run. Their commit looks again, on the table
    version it would commit on, and refuses: the local rows stay as they are, once."""
    from tests.helpers.wait import wait_until
    from worker.queue.client import TenantClient

    gate = tmp_path / "gate"
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({"f0": {"fp": "1", "rows": [0], "gate": str(gate)}})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    rid = queue_env.start("plan", "acme")
    wait_until(c.reads, 60, queue_env.logs)  # the workers' read waits at the gate

    c.set({"f0": {"fp": "1", "rows": [0]}})  # the same fragment version, no gate
    r = _local_refresh(queue_env, c.folder)
    assert r.returncode == 0, r.stderr
    assert _local_rows(queue_env, c.folder) == [0]

    gate.touch()
    record = TenantClient(redis_client, "acme").wait("plan", rid, timeout=120)
    assert record.status == "failed", record.model_dump_json() + queue_env.logs()
    (failure,) = record.summary.failures
    assert failure.step == "commit", failure
    assert "a local `connector refresh`" in failure.message, failure.message
    assert "CONNECTOR_OUTPUT" in failure.message, failure.message
    assert _local_rows(queue_env, c.folder) == [0]  # not twice
    r = queue_env.cli("status", "plan", "--tenant", "acme")
    assert "commit failed (user)" in r.stderr, r.stdout + r.stderr
