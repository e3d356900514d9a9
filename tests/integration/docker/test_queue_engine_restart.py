"""Queue mode with the Docker sandbox across a Docker engine restart, mid-refresh.

The engine (dockerd) is stopped with SIGTERM while a fragment is being read and started
again with scripts/start-dockerd.sh: the read in flight fails as infrastructure, its job
is retried with backoff on a fresh session, and the refresh completes with every row
exactly once, and no sandbox container is left behind. The engine is restarted in a
`finally`, whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import ROOT, table_files, write_connector
from tests.helpers.wait import wait_until
from worker.sandbox.docker import LABEL

pytestmark = [pytest.mark.redis, pytest.mark.docker]

TENANT = "qengine"
PIDFILE = Path("/var/run/docker.pid")
N = 6

CODE = '''
import time

def list_objects(context, metadata):
    for i in range(N_FRAGMENTS):
        yield {"name": f"e{i:02d}", "fingerprint": "1"}

def read_bytes(context, metadata):
    time.sleep(2)
    i = int(metadata["name"][1:])
    yield "id\\n" + str(i) + "\\n" + str(100 + i) + "\\n"
'''.replace("N_FRAGMENTS", str(N))
SPEC = f"""
name: engine
tenant: {TENANT}
schema:
  - {{name: id, type: int64}}
"""


def engine_answers() -> bool:
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def stop_engine() -> None:
    """SIGTERM to dockerd (its pid file), then wait until it no longer answers and
    has exited (a dockerd still shutting down would make the start script wait on it)."""
    pid = int(PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not engine_answers() and _gone(pid), 60, "dockerd did not stop",
               interval=0.2)


def start_engine() -> None:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "start-dockerd.sh")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert engine_answers()


def test_docker_engine_restarted_mid_refresh_is_retried_rows_exactly_once(
        queue_env, tmp_path, redis_client):
    from worker.queue.tracker import Tracker

    # the product's own backoff (5, 15, 30 s): the engine is back well within it
    queue_env.env.pop("CONNECTOR_RETRY_INTERVALS", None)
    queue_env.env.update(CONNECTOR_SANDBOX="docker")
    folder = write_connector(tmp_path / "engine", CODE, SPEC)
    queue_env.deploy(folder)
    workers = queue_env.start_workers(1)
    stopped = False
    try:
        rid = queue_env.start("engine", TENANT)
        tracker = Tracker(redis_client, TENANT, "engine", rid)

        def first_read() -> bool:
            assert workers.poll() is None, queue_env.logs()
            return tracker.counts().read >= 1

        wait_until(first_read, 180, queue_env.logs)  # the timeout includes the image build
        time.sleep(0.7)  # the next fragment is being read (each read sleeps 2 s)
        assert tracker.counts().read == 1

        stopped = True
        stop_engine()
        time.sleep(2)
        start_engine()
        stopped = False

        waiter = subprocess.run(
            [sys.executable, "-m", "worker.cli", "refresh", "engine", "--tenant", TENANT,
             "--queue", "--wait", "--json"], cwd=ROOT, env=queue_env.env,
            capture_output=True, text=True, timeout=240)
        lines = [ln for ln in waiter.stdout.splitlines() if ln.startswith("{")]
        assert f"joining {rid}" in waiter.stderr
        assert waiter.returncode == 0, waiter.stderr + queue_env.logs()
        assert json.loads(lines[-1]) == {"listed": N, "read": N, "skipped": 0, "recovered": 0,
                                         "deleted": 0,
                                         "failed": 0, "rows": 2 * N, "rejected": 0, "defaulted": 0}

        # every row exactly once, one file per fragment in the table
        rows = queue_env.rows("engine", TENANT)
        assert sorted(r["id"] for r in rows) == sorted([*range(N), *range(100, 100 + N)])
        files = table_files(queue_env.output, TENANT, "engine")
        assert len(files) == N and all(f.endswith(".parquet") for f in files), files
        logs = "".join(log.read_text() for _, log in queue_env.workers)
        assert "scheduled for retry" in logs  # the read in flight failed, and was retried
        assert workers.poll() is None  # the worker rode over the restart
    finally:
        if stopped or not engine_answers():
            start_engine()
        queue_env.stop()
        leftovers = []
        with contextlib.suppress(Exception):
            client = docker.from_env(timeout=60)
            for c in client.containers.list(all=True, filters={
                    "label": [LABEL, f"io.connector.tenant={TENANT}"]}):
                leftovers.append(f"{c.short_id} {c.status}")
                c.remove(force=True)
            client.close()
    assert workers.returncode == 0, queue_env.logs()
    # containers the engine could not remove while it was down (the one killed mid-read,
    # any created as it went down) were removed once it answered again, or at exit
    assert leftovers == [], queue_env.logs()
