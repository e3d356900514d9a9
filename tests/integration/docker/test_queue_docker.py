"""Queue mode with the Docker sandbox: real Redis, real worker processes, real engine.

Everything here runs under its own tenant, so the containers and images it counts are
its own even while other tests use the same engine."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import ROOT, write_connector
from tests.helpers.connectors import ids
from tests.helpers.timing import RETRIES, fast
from tests.helpers.wait import wait_until
from worker.sandbox.docker import LABEL

pytestmark = [pytest.mark.redis, pytest.mark.docker]

TENANT = "qdocker"
FAST = fast(RETRIES)

TOKEN_CODE = '''
import time, uuid
FAIL = {fail!r}

def context(credentials):
    return {{"token": uuid.uuid4().hex[:12]}}  # one per context() call

def list_objects(context, metadata):
    for i in range({n}):
        yield {{"name": f"t{{i:02d}}", "fingerprint": "1"}}

def read_bytes(context, metadata):
    name = metadata["name"]
    print("reading", name)
    time.sleep({sleep})
    if name in FAIL:
        raise RuntimeError("remote said no for " + name)
    yield "id,token\\n" + str(int(name[1:])) + "," + context["token"] + "\\n"
'''
TOKEN_SPEC = f"""
name: {{name}}
tenant: {TENANT}
schema:
  - {{{{name: id, type: int64}}}}
  - {{{{name: token, type: string}}}}
"""


def token_connector(root: Path, name: str, n: int, sleep: float = 0.0,
                    fail: tuple[str, ...] = ()) -> Path:
    return write_connector(root / name, TOKEN_CODE.format(fail=set(fail), n=n, sleep=sleep),
                           TOKEN_SPEC.format(name=name))


def example_copy(root: Path, example: str) -> Path:
    """An example connector, unchanged but for its tenant."""
    dst = root / example
    shutil.copytree(ROOT / "examples" / example, dst)
    spec = dst / "connector.yaml"
    spec.write_text(f"tenant: {TENANT}\n" + spec.read_text())
    return dst


@pytest.fixture
def engine():
    client = docker.from_env(timeout=120)
    client.ping()
    yield client
    client.close()


def our_containers(client: docker.DockerClient, name: str | None = None) -> list:
    labels = [LABEL, f"io.connector.tenant={TENANT}"]
    if name:
        labels.append(f"io.connector.name={name}")
    return client.containers.list(all=True, filters={"label": labels})


def creates(client: docker.DockerClient, name: str, since: float) -> int:
    """Sandbox containers created for a connector since `since`: one per session, and
    a session runs context() exactly once. (Image builds create containers too, with
    the connector's labels but not the sandbox's.)"""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"type": "container", "event": "create",
                                    "label": [LABEL, f"io.connector.tenant={TENANT}",
                                              f"io.connector.name={name}"]})
    return sum(1 for _ in events)


def test_docker_queued_refresh_sealed_example_warm_sessions_no_leftovers(
        queue_env, cli, tmp_path, engine):
    from cryptography.fernet import Fernet

    queue_env.env.update(CONNECTOR_SANDBOX="docker",
                         CONNECTOR_SECRET_KEY=Fernet.generate_key().decode())
    # Workers build the images on demand, from the bundle stored in Redis.
    for image in engine.images.list(filters={"label": f"io.connector.tenant={TENANT}"}):
        engine.images.remove(image.id, force=True)
    example = example_copy(tmp_path, "custom_parser")
    many = token_connector(tmp_path, "many", n=12, sleep=0.1)
    queue_env.deploy(example)  # credentials.json is sealed (not in the bundle)
    queue_env.deploy(many)
    since = time.time() - 1
    workers = queue_env.start_workers(2)

    r, s = queue_env.refresh("custom_parser", TENANT)
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s == {"listed": 3, "read": 3, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 6,
                 "rejected": 0, "defaulted": 0}
    lr, ls = cli.refresh(example, sandbox="process")  # local mode, the folder's own file
    assert lr.returncode == 0, lr.stderr
    assert ls == s
    queued = queue_env.rows("custom_parser", TENANT)
    assert sorted(map(json.dumps, queued)) == sorted(map(json.dumps, cli.rows(example)))
    # the greeting came from the sealed file
    assert {"col1": "hi from fragment1", "_fragment": "fragment1"} in queued

    r, s = queue_env.refresh("many", TENANT)
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert (s["read"], s["rows"]) == (12, 12)
    rows = queue_env.rows("many", TENANT)
    assert ids(rows) == list(range(12))
    # warm sessions: context() ran once per worker, not once per fragment or job
    assert 1 <= len({row["token"] for row in rows}) <= 2
    assert 1 <= creates(engine, "many", since) <= 2
    assert 1 <= creates(engine, "custom_parser", since) <= 2
    built = {t.split(":")[0] for i in engine.images.list(
        filters={"label": f"io.connector.tenant={TENANT}"}) for t in i.tags}
    assert {f"connector-{TENANT}--custom_parser", f"connector-{TENANT}--many"} <= built
    assert our_containers(engine)  # still warm while the workers run

    queue_env.stop()  # SIGTERM
    assert workers.returncode == 0, queue_env.logs()
    assert our_containers(engine) == []


def test_docker_removed_container_is_retried_on_a_fresh_session_user_error_is_not(
        queue_env, tmp_path, engine, redis_client):
    from worker.queue.tracker import Tracker
    from worker.state import keys

    queue_env.env.update(FAST, CONNECTOR_SANDBOX="docker")
    slow = token_connector(tmp_path, "slow", n=8, sleep=0.6)
    boom = token_connector(tmp_path, "boom", n=4, fail=("t02",))
    queue_env.deploy(slow)
    queue_env.deploy(boom)
    since = time.time() - 1
    workers = queue_env.start_workers(1)

    rid = queue_env.start("slow", TENANT)
    tracker = Tracker(redis_client, TENANT, "slow", rid)
    # the timeout includes building the image
    wait_until(lambda: tracker.counts().read >= 2, 120, queue_env.logs)
    time.sleep(0.3)  # the third fragment is being read
    doomed = our_containers(engine, "slow")
    assert len(doomed) == 1
    doomed[0].remove(force=True)  # infrastructure failure, mid-read

    r, s = queue_env.refresh("slow", TENANT)  # joins
    assert f"joining {rid}" in r.stderr
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s == {"listed": 8, "read": 8, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 8,
                 "rejected": 0, "defaulted": 0}
    rows = queue_env.rows("slow", TENANT)
    assert ids(rows) == list(range(8))  # every row exactly once
    assert len({row["token"] for row in rows}) == 2  # the retry ran on a fresh session
    assert creates(engine, "slow", since) == 2
    logs = "".join(log.read_text() for _, log in queue_env.workers)
    assert "container was removed while running" in logs
    assert "scheduled for retry" in logs

    # a user exception: recorded, the refresh fails, nothing is retried
    r, s = queue_env.refresh("boom", TENANT)
    assert r.returncode == 1, r.stderr + queue_env.logs()
    assert s["failed"] == 1 and s["read"] == 2
    assert "remote said no for t02" in r.stderr and "RuntimeError" in r.stderr
    assert "(user)" in r.stderr
    time.sleep(2.5)  # longer than the first retry interval and a reaper pass
    scheduled = f"{queue_env.env['RQ_KEY_PREFIX']}:scheduled:{keys.tenant_queue(TENANT)}"
    assert redis_client.zcard(scheduled) == 0
    assert creates(engine, "boom", since) == 1  # the session survived the user error
    assert workers.poll() is None

    queue_env.stop()
    assert our_containers(engine) == []
