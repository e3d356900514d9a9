"""A process-sandbox worker runs user code as itself, on its own files, and connectors
with the same pins share one user environment: it serves one tenant unless the
operator names more (CONNECTOR_PROCESS_SANDBOX_TENANTS). A refresh of any other tenant
fails, naming the tenant and the reason, and its code never runs."""

from __future__ import annotations

import pytest

from tests.helpers.connectors import PlanConnector, ids

pytestmark = pytest.mark.redis


def _failure(queue_env, name: str, tenant: str) -> str:
    st = queue_env.cli("status", name, "--tenant", tenant, env={"COLUMNS": "250"})
    assert st.returncode == 0, st.stderr
    return st.stdout + st.stderr


@pytest.mark.parametrize("served", [None, "ta"])
def test_a_process_sandbox_worker_serves_one_tenant(queue_env, tmp_path, served):
    ours = PlanConnector(tmp_path, "c", served or "default")
    other = PlanConnector(tmp_path, "c", "tb")
    for c in (ours, other):
        c.set({"x": {"fp": "1", "rows": [1, 2]}})
        queue_env.deploy(c.folder)
    env = {"CONNECTOR_PROCESS_SANDBOX_TENANTS": served} if served else {}
    queue_env.env.pop("CONNECTOR_PROCESS_SANDBOX_TENANTS", None)  # unset: the default
    queue_env.start_workers(1, env=env)

    r, s = queue_env.refresh("c", ours.tenant)
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert ids(queue_env.rows("c", ours.tenant)) == [1, 2]

    r, s = queue_env.refresh("c", "tb")
    assert r.returncode == 1, r.stdout + r.stderr + queue_env.logs()
    assert s["failed"] == 1 and s["read"] == 0
    for text in (r.stderr, _failure(queue_env, "c", "tb")):
        assert "tenant 'tb'" in text and "process sandbox" in text, text
        assert "CONNECTOR_PROCESS_SANDBOX_TENANTS" in text, text
        assert "(limit)" in text and "infra" not in text, text
    assert other.reads() == []  # its code never ran: no listing, no read


def test_the_operator_opts_in_to_several_tenants(queue_env, tmp_path):
    tenants = ("ta", "tb")
    for t in tenants:
        c = PlanConnector(tmp_path, "c", t)
        c.set({"x": {"fp": "1", "rows": [5]}})
        queue_env.deploy(c.folder)
    queue_env.start_workers(1, env={"CONNECTOR_PROCESS_SANDBOX_TENANTS": "ta, tb"})
    for t in tenants:
        r, s = queue_env.refresh("c", t)
        assert r.returncode == 0, r.stderr + queue_env.logs()


def test_a_bad_tenant_list_stops_the_worker_naming_it(queue_env):
    r = queue_env.cli("worker", "--burst",
                      env={"CONNECTOR_PROCESS_SANDBOX_TENANTS": "ta,Bad Name"})
    assert r.returncode != 0
    assert "CONNECTOR_PROCESS_SANDBOX_TENANTS" in r.stderr and "Bad Name" in r.stderr, r.stderr
