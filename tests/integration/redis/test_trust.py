"""The multi-tenant trust boundary in queue mode, against a real Redis and real workers:
what one tenant supplies never reaches another tenant's schedule, data or credentials,
nor the worker's own secrets, and setup errors are the tenant's, reported once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.queue_connectors import PlanConnector

pytestmark = pytest.mark.redis


@pytest.fixture
def rq_keys(redis_client, redis_prefix):
    """In-process RQ uses the default `rq:` prefix: its keys that name this test's
    queues and jobs (which carry our prefix) are deleted afterwards."""
    yield
    keys = list(redis_client.scan_iter(match=f"rq:*{redis_prefix[0]}*", count=1000))
    if keys:
        redis_client.delete(*keys)


def test_schedules_of_colliding_names_are_both_armed(redis_client, rq_keys,
                                                     tmp_path: Path) -> None:
    """Tenant `a-b`/connector `c` and tenant `a`/connector `b-c` both get their next run."""
    from worker.queue.client import TenantClient
    from worker.queue.enqueue import tenant_queue

    for tenant, name in (("a-b", "c"), ("a", "b-c")):
        c = PlanConnector(tmp_path / tenant, name, tenant,
                          extra_spec="schedule: {every: 1h}\n")
        TenantClient(redis_client, tenant).deploy(c.folder)
    for tenant in ("a-b", "a"):
        armed = tenant_queue(redis_client, tenant).scheduled_job_registry.get_job_ids()
        assert len(armed) == 1, (tenant, armed)


def _tamper_bundle(redis_client, tenant: str, name: str, data: bytes,
                   digest: str | None = None) -> None:
    """Replace the deployed bundle (what an attacker with a forged upload, or a corrupt
    store, leaves): `digest` is the version the deployment points at."""
    import hashlib

    from worker.registry import get_deployment
    from worker.state.keys import ConnectorKeys

    d = get_deployment(redis_client, tenant, name)
    digest = digest or hashlib.sha256(data).hexdigest()
    k = ConnectorKeys(tenant, name)
    redis_client.set(k.bundle(digest), data)
    redis_client.set(k.deployment, d.model_copy(update={"bundle": digest}).model_dump_json(
        by_alias=True))


def _escaping_bundle() -> bytes:
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for entry in ("connector.yaml", "../escape.txt"):
            body = b"name: x\n"
            info = tarfile.TarInfo(entry)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), mtime=0)


@pytest.mark.parametrize("damage", ["escaping-entry", "hash-mismatch", "not-deployed"])
def test_broken_deployments_fail_once_as_the_tenants_error(queue_env, tmp_path, redis_client,
                                                           damage: str) -> None:
    """A bundle with a `../` entry, a bundle that does not match its hash, and a
    connector removed while its refresh waited: permanent errors, reported to the
    tenant at once, not retried as infrastructure."""
    from worker.state.keys import ConnectorKeys

    queue_env.env["CONNECTOR_RETRY_INTERVALS"] = "1,1,1"
    c = PlanConnector(tmp_path, "broken", "acme")
    c.set({"a": {"fp": "1", "rows": [1]}})
    queue_env.deploy(c.folder)
    if damage == "escaping-entry":
        _tamper_bundle(redis_client, "acme", "broken", _escaping_bundle())
        expected = "escape.txt"
    elif damage == "hash-mismatch":
        _tamper_bundle(redis_client, "acme", "broken", b"not the bundle", "f" * 64)
        expected = "does not match its hash"
    rid = queue_env.start("broken", "acme")
    if damage == "not-deployed":
        redis_client.delete(ConnectorKeys("acme", "broken").deployment)
        expected = "no connector 'acme/broken' is deployed"
    queue_env.start_workers(1)

    from worker.state.redis import RedisState

    state = RedisState(redis_client, "acme", "broken")
    import time

    deadline = time.monotonic() + 60
    while (rec := state.refresh(rid)) is None or rec.status == "running":
        assert time.monotonic() < deadline, queue_env.logs()
        time.sleep(0.2)
    [failure] = rec.summary.failures
    assert failure.kind == "user", failure
    assert expected in failure.message, failure.message
    assert "after retries" not in failure.message
    assert "Traceback" not in queue_env.logs()
