"""Deploy bundles at the queue-mode boundary: what `deploy` refuses to pack, and what a
worker refuses to unpack when a tenant writes its own bundle to Redis."""

from __future__ import annotations

import pytest

from tests.helpers.bundle_bombs import tar_gz
from tests.helpers.connectors import PlanConnector
from worker.bundle import MAX_UNPACKED_BYTES
from worker.registry import Deployment
from worker.state.keys import ConnectorKeys

pytestmark = pytest.mark.redis


def test_deploy_refuses_a_folder_with_a_link_naming_it(queue_env, tmp_path):
    c = PlanConnector(tmp_path, "linky", "acme")
    (tmp_path / "host.txt").write_text("host only")
    (c.folder / "notes.txt").symlink_to(tmp_path / "host.txt")
    r = queue_env.cli("deploy", str(c.folder))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "notes.txt: symbolic link to" in r.stderr
    r = queue_env.cli("status", "linky", "--tenant", "acme")
    assert "no connector 'acme/linky' is deployed" in r.stderr


def test_worker_refuses_a_bundle_that_unpacks_huge(queue_env, tmp_path, redis_client):
    c = PlanConnector(tmp_path, "bomb", "acme")
    c.set({"f0": {"fp": "1", "rows": [1]}})
    queue_env.deploy(c.folder)
    # The tenant replaces its version with a bundle of its own making: the real files
    # plus one that inflates past the limit (a few hundred KiB compressed).
    members: list[tuple[str, bytes | int]] = [
        (p.name, p.read_bytes()) for p in sorted(c.folder.iterdir())]
    data, digest = tar_gz([*members, ("bomb.bin", 2 * MAX_UNPACKED_BYTES)])
    k = ConnectorKeys("acme", "bomb")
    d = Deployment.model_validate_json(redis_client.get(k.deployment))
    redis_client.set(k.bundle(digest), data)
    redis_client.set(k.deployment, d.model_copy(update={"bundle": digest})
                     .model_dump_json(by_alias=True))
    queue_env.start_workers(1)

    r, s = queue_env.refresh("bomb", "acme", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr + queue_env.logs()
    assert f"unpacks to more than {MAX_UNPACKED_BYTES} bytes" in r.stderr
    assert "(infra)" not in r.stderr
    assert c.reads() == []
    # A user failure: nothing waits in a retry schedule, and nothing was left unpacked.
    rq_prefix = queue_env.env["RQ_KEY_PREFIX"]
    assert not list(redis_client.scan_iter(match=f"{rq_prefix}:scheduled:*"))
    unpacked = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert unpacked < MAX_UNPACKED_BYTES
