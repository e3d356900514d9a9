"""Queue mode with the dataset on S3 (moto's server on loopback): workers write fragment
files to the bucket, finalize commits the Delta version there, and every reader sees
one table."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.helpers.connectors import PlanConnector

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 with a bucket `lake`; the env that points at it."""
    port = _free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                              region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="lake")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_queued_refresh_commits_one_version_on_s3(queue_env, s3, tmp_path):
    queue_env.env.update(s3)
    queue_env.env["CONNECTOR_OUTPUT"] = "s3://lake/datasets"
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(6)})
    queue_env.deploy(c.folder)
    queue_env.start_workers(2)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s["read"] == 6 and s["failed"] == 0
    assert sorted(x["id"] for x in queue_env.rows("plan", "acme")) == list(range(6))

    c.set({**{f"f{i}": {"fp": "1", "rows": [i]} for i in range(1, 6)},
           "f2": {"fp": "2", "rows": [20]}})
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert (s["read"], s["deleted"]) == (1, 1)
    assert sorted(x["id"] for x in queue_env.rows("plan", "acme")) == [1, 3, 4, 5, 20]

    from deltalake import DeltaTable

    table = DeltaTable("s3://lake/datasets/acme/plan", storage_options={
        "AWS_ENDPOINT_URL": s3["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1"})
    assert table.version() == 1 and len(table.file_uris()) == 5
    h = queue_env.cli("history", "plan", "--tenant", "acme", "--json")
    assert h.returncode == 0, h.stderr
    assert len(h.stdout.splitlines()) == 2
