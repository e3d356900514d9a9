"""With the dataset on S3 a local refresh's state is not beside the table (it is under
CONNECTOR_STATE_DIR), so the table's own commits say which state store owns it, and
queue workers and local refreshes each refuse the other's table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers.connectors import PlanConnector
from tests.integration.redis.test_queue_s3 import s3  # noqa: F401 - the fixture

pytestmark = pytest.mark.redis

OUTPUT = "s3://lake/datasets"


def _local(queue_env, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**queue_env.env, "CONNECTOR_STATE_DIR": str(queue_env.tmp / "state")}
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=240)


def _ids(queue_env, c: PlanConnector) -> list[int]:
    r = _local(queue_env, "show", str(c.folder), "--jsonl")
    assert r.returncode == 0, r.stderr
    return sorted(int(line.split('"id": ')[1].split(",")[0].rstrip("}"))
                  for line in r.stdout.splitlines())


@pytest.fixture
def plan(queue_env, s3, tmp_path) -> PlanConnector:  # noqa: F811 - the fixture
    queue_env.env.update(s3)
    queue_env.env["CONNECTOR_OUTPUT"] = OUTPUT
    c = PlanConnector(tmp_path, "plan", "acme")
    c.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(3)})
    return c


def test_workers_refuse_a_table_a_local_refresh_owns_on_s3(queue_env, plan):
    r = _local(queue_env, "refresh", str(plan.folder), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    queue_env.deploy(plan.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 1, r.stderr + queue_env.logs()
    assert f"{OUTPUT}/acme/plan" in r.stderr and "local `connector refresh`" in r.stderr, \
        r.stderr
    assert s["read"] == 0, s
    assert _ids(queue_env, plan) == [0, 1, 2]  # nothing added twice


def test_a_local_refresh_refuses_a_table_the_workers_own_on_s3(queue_env, plan):
    # a local refresh wrote the dataset first (its state stays under CONNECTOR_STATE_DIR)
    r = _local(queue_env, "refresh", str(plan.folder), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    # the table is deleted to start over, and the workers write it again
    import boto3

    client = boto3.client("s3", endpoint_url=queue_env.env["AWS_ENDPOINT_URL"],
                          region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    for o in client.list_objects_v2(Bucket="lake", Prefix="datasets/acme/plan/")["Contents"]:
        client.delete_object(Bucket="lake", Key=o["Key"])
    queue_env.deploy(plan.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("plan", "acme")
    assert r.returncode == 0 and s["read"] == 3, r.stderr + queue_env.logs()

    plan.set({f"f{i}": {"fp": "1", "rows": [i]} for i in range(4)})
    r = _local(queue_env, "refresh", str(plan.folder), "--sandbox", "process")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{OUTPUT}/acme/plan" in r.stderr and "queue-mode workers" in r.stderr, r.stderr
    assert sorted(x["id"] for x in queue_env.rows("plan", "acme")) == [0, 1, 2]
