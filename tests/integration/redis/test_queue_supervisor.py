"""`connector worker --concurrency N` keeps N worker processes: one that dies is
replaced, and the refresh it was part of still completes."""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers.connectors import PlanConnector
from tests.helpers.processes import group_pids
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis


def test_a_dead_worker_process_is_replaced(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "sup", "acme")
    c.set({f"p{i}": {"fp": "1", "rows": [i]} for i in range(4)})
    queue_env.deploy(c.folder)
    parent = queue_env.start_workers(2)
    wait_until(lambda: len(group_pids(parent.pid)) >= 3, 30, queue_env.logs, interval=0.1)
    first = group_pids(parent.pid) - {parent.pid}
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:  # a replacement appears within the first backoff
        now = group_pids(parent.pid) - {parent.pid}
        return len(now) == 2 and victim not in now

    wait_until(replaced, 30, queue_env.logs, interval=0.1)
    assert parent.poll() is None
    assert "exited -9; starting another" in queue_env.logs()
    r, s = queue_env.refresh("sup", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s["read"] == 4
    queue_env.stop()
    assert parent.returncode == 0
