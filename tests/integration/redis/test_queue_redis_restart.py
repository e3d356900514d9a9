"""Queue mode across a Redis restart: a Redis of the test's own (AOF, fsync always) is
killed and restarted under running workers mid-refresh."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, QueueEnv, table_files
from tests.helpers.connectors import PlanConnector, ids
from tests.helpers.processes import group_pids
from tests.helpers.timing import LEASES, RETRIES, fast
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis

FAST = fast(RETRIES, LEASES)  # retries and abandoned-job detection in seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AofRedis:
    """A redis-server of this test only: its own port and directory, AOF fsynced on
    every write, restarted on the same port and directory."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--maxmemory-policy", "noeviction",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:  # BusyLoadingError: replaying the AOF
                return False

        wait_until(answers, 20, lambda: (self.dir / "redis.log").read_text()[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def shutdown(self) -> None:
        """SHUTDOWN: Redis flushes the AOF and exits."""
        assert self.proc is not None
        redis.Redis.from_url(self.url).shutdown()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.fixture
def aof_redis(tmp_path: Path):
    server = AofRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_killed_and_restarted_mid_refresh_rows_exactly_once(aof_redis, tmp_path):
    tag = uuid.uuid4().hex[:8]
    q = QueueEnv(tmp_path, (f"cxr{tag}", f"rqr{tag}"))
    q.env.update(FAST, REDIS_URL=aof_redis.url)
    try:
        n = 16
        c = PlanConnector(tmp_path, "blip", "acme")
        c.set({f"b{i:02d}": {"fp": "1", "rows": [i, 100 + i], "sleep": 0.3}
               for i in range(n)})
        q.deploy(c.folder)
        workers = q.start_workers(2)
        rid = q.start("blip", "acme")
        # Follow it from before the first restart: `--wait` must ride over the blips.
        waiter = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "refresh", "blip", "--tenant", "acme",
             "--queue", "--wait", "--json"], cwd=ROOT, env=q.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def reads_reach(k: int) -> None:
            wait_until(lambda: len(c.reads()) >= k, 60, q.logs)

        reads_reach(3)
        procs = group_pids(workers.pid)
        assert len(procs) == 3  # `connector worker --concurrency 2`: parent + 2 workers
        aof_redis.kill()        # kill -9, mid-read: replies in flight are lost
        time.sleep(3)           # long enough for every worker to notice
        aof_redis.start()       # same port, same directory: replays the AOF
        reads_reach(9)
        aof_redis.shutdown()    # a clean SHUTDOWN this time
        time.sleep(2)
        aof_redis.start()

        out, err = waiter.communicate(timeout=120)
        summary = json.loads(out.strip().splitlines()[-1])
        assert f"joining {rid}" in err
        if waiter.returncode == 0:  # completed across both restarts
            assert summary == {"listed": n, "read": n, "skipped": 0, "recovered": 0, "deleted": 0,
                               "failed": 0, "rows": 2 * n, "rejected": 0, "defaulted": 0}, err
        else:  # or failed cleanly, on infrastructure; the next refresh completes
            assert waiter.returncode == 1 and "infrastructure" in err, err + q.logs()
            r, s = q.refresh("blip", "acme", timeout=120)
            assert r.returncode == 0, r.stderr + q.logs()
            assert s["failed"] == 0 and s["read"] + s["skipped"] == n

        # workers survived both blips: the same processes, still running
        assert workers.poll() is None
        assert group_pids(workers.pid) == procs
        logs = "".join(log.read_text() for _, log in q.workers)
        assert "Redis unavailable" in logs and "Redis is back" in logs
        assert "quitting" not in logs

        # every row exactly once; one file per fragment in the table, consistent with Redis
        assert ids(q.rows("blip", "acme")) == sorted([*range(n), *range(100, 100 + n)])
        assert set(c.reads()) == {f"b{i:02d}" for i in range(n)}
        assert len(table_files(q.output, "acme", "blip")) == n
        # and an unchanged next refresh reads nothing
        r, s = q.refresh("blip", "acme")
        assert r.returncode == 0, r.stderr
        assert (s["read"], s["skipped"], s["failed"]) == (0, n, 0)
    finally:
        q.stop()
    # SIGTERM stopped them cleanly (the shared Redis of the other tests is not used)
    assert workers.returncode == 0, q.logs()
    assert os.environ.get("REDIS_URL") != aof_redis.url
