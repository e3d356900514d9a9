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

