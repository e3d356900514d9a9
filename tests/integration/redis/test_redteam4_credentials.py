"""A tenant's credentials file as an attack on the deployment: one too large to keep,
one that never ends. Deploy reads the file and seals it into the tenant's deployment
record in Redis (outside the bundle quota, which counts the compressed bundle the file
is left out of), and every worker opens it before each session: a 300 MB file would put
400 MB of token in Redis, and a FIFO would hang the deploy forever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE
from worker.spec import MAX_CREDENTIALS_BYTES
from worker.state.keys import ConnectorKeys

pytestmark = pytest.mark.redis

SPEC = """
name: {name}
tenant: acme
credentials: {{file: secret.txt}}
schema:
  - {{name: got, type: string}}
"""
KEY = {"CONNECTOR_SECRET_KEY": "hPzSyMTrGhMlP9sO1bm8XQHyK_8cf7qKXazpz9J3prk="}


def test_a_credentials_file_too_big_to_keep_is_refused_naming_it(
        queue_env, connector, redis_client) -> None:
    c = connector(ECHO_CODE, SPEC.format(name="bigcreds"), name="bigcreds")
    with open(c / "secret.txt", "wb") as f:
        f.truncate(MAX_CREDENTIALS_BYTES + 1)  # sparse: costs the test no disk
    r = queue_env.cli("deploy", str(c), env=KEY)
    assert r.returncode == 2, r.stdout
    said = " ".join(r.stderr.split())
    assert (f"credentials.file: secret.txt is {MAX_CREDENTIALS_BYTES + 1} bytes, over the "
            f"{MAX_CREDENTIALS_BYTES} byte limit for credentials") in said, said
    assert redis_client.get(ConnectorKeys("acme", "bigcreds").deployment) is None


def test_a_credentials_file_that_is_not_a_regular_file_is_refused(
        queue_env, connector, redis_client) -> None:
    c = connector(ECHO_CODE, SPEC.format(name="fifocreds"), name="fifocreds")
    os.mkfifo(c / "secret.txt")  # opening it for reading would wait for a writer forever
    r = queue_env.cli("deploy", str(c), env=KEY, timeout=60)
    assert r.returncode == 2, r.stdout
    said = " ".join(r.stderr.split())
    assert "credentials.file: secret.txt is not a regular file" in said, said
    assert redis_client.get(ConnectorKeys("acme", "fifocreds").deployment) is None


def test_credentials_at_the_limit_are_kept_and_reach_the_connector(
        queue_env, connector) -> None:
    c = connector(ECHO_CODE, SPEC.format(name="okcreds"), name="okcreds")
    (c / "secret.txt").write_text("t" * MAX_CREDENTIALS_BYTES)
    queue_env.deploy(c, env=KEY)
    queue_env.start_workers(1, env=KEY)
    r, s = queue_env.refresh("okcreds", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert [len(row["got"]) for row in queue_env.rows("okcreds", "acme")] == [
        MAX_CREDENTIALS_BYTES]


def test_a_worker_refuses_an_oversized_credentials_reference(
        queue_env, connector, tmp_path: Path) -> None:
    creds_dir = tmp_path / "creds"
    (creds_dir / "acme" / "refcreds").mkdir(parents=True)
    with open(creds_dir / "acme" / "refcreds" / "secret.txt", "wb") as f:
        f.truncate(MAX_CREDENTIALS_BYTES + 1)
    c = connector(ECHO_CODE, SPEC.format(name="refcreds"), name="refcreds")
    queue_env.deploy(c, "--credentials-ref")
    queue_env.start_workers(1, env={"CONNECTOR_CREDENTIALS_DIR": str(creds_dir)})
    r, s = queue_env.refresh("refcreds", "acme")
    assert r.returncode == 1, r.stdout
    said = " ".join(r.stderr.split())
    assert (f"secret.txt is {MAX_CREDENTIALS_BYTES + 1} bytes, over the "
            f"{MAX_CREDENTIALS_BYTES} byte limit for credentials") in said, said
