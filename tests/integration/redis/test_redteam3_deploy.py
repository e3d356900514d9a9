"""A tenant's deploy must land under that tenant only, even when the folder changes
while it is being deployed (an upload still being written, a checkout the tenant can
push to): the tenant the orchestrator checked is the tenant whose keys are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE, write_connector
from worker.registry import DeployError, NotDeployed, get_deployment

pytestmark = pytest.mark.redis


def test_a_folder_that_turns_into_another_tenants_mid_deploy_never_lands_there(
        redis_client, redis_prefix, tmp_path: Path, monkeypatch) -> None:
    from worker import registry
    from worker.queue import client as client_mod

    folder = write_connector(tmp_path / "c", ECHO_CODE, "name: orders\ntenant: mallory\n")
    real_load = registry.load_connector
    calls = {"n": 0}

    def racing_load(path):  # noqa: ANN001, ANN202
        # The tenant rewrites connector.yaml right after the orchestrator's check read it.
        loaded = real_load(path)
        calls["n"] += 1
        if calls["n"] == 1:
            (Path(path) / "connector.yaml").write_text("name: orders\ntenant: victim\n")
        return loaded

    monkeypatch.setattr(client_mod, "load_connector", racing_load, raising=False)
    monkeypatch.setattr(registry, "load_connector", racing_load)
    try:
        client_mod.TenantClient(redis_client, "mallory").deploy(folder)
    except DeployError as e:
        assert "victim" in str(e) and "mallory" in str(e), str(e)
    with pytest.raises(NotDeployed):
        get_deployment(redis_client, "victim", "orders")
