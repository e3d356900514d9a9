"""What deploys leave in the shared Redis, and what a worker keeps: superseded bundles
are deleted, a tenant's stored bundle bytes are capped, a worker's caches are bounded."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import write_connector
from tests.helpers.connectors import PlanConnector
from tests.helpers.wait import wait_until
from worker import ceilings, registry
from worker.models import RefreshRecord
from worker.queue import jobs
from worker.queue.sessions import SessionKey
from worker.registry import DeployError, deploy, get_deployment
from worker.settings import settings
from worker.state.redis import RedisState

pytestmark = pytest.mark.redis

CODE = '''
def list_objects(context, metadata):
    return []

def read_bytes(context, metadata):
    yield "id\\n"
'''
SPEC = "name: {name}\ntenant: {tenant}\nschema:\n  - {{name: id, type: int64}}\n"


def _folder(tmp: Path, name: str, tenant: str = "acme", ballast: int = 0,
            version: int = 0) -> Path:
    folder = tmp / f"{tenant}-{name}"
    write_connector(folder, CODE + f"# version {version}\n",
                    SPEC.format(name=name, tenant=tenant))
    if ballast:
        (folder / "ballast.bin").write_bytes(os.urandom(ballast))  # incompressible
    return folder


def _bundle_keys(redis_client, prefix: str, tenant: str, name: str) -> list[bytes]:
    return list(redis_client.scan_iter(match=f"{prefix}:{tenant}:{name}:bundle:*"))


def test_redeploys_keep_the_current_and_the_previous_bundle(redis_prefix, redis_client,
                                                           tmp_path):
    digests = []
    for v in range(6):
        digests.append(deploy(redis_client, _folder(tmp_path, "c", version=v)).bundle)
    kept = _bundle_keys(redis_client, redis_prefix[0], "acme", "c")
    assert sorted(k.decode().rsplit(":", 1)[1] for k in kept) == sorted(digests[-2:])
    assert get_deployment(redis_client, "acme", "c").bundle == digests[-1]


def test_tenant_bundle_bytes_are_capped_across_connector_names(redis_prefix, redis_client,
                                                               tmp_path, monkeypatch):
    monkeypatch.setenv("CONNECTOR_MAX_TENANT_BUNDLE_BYTES", str(250 << 10))
    settings.cache_clear()
    deploy(redis_client, _folder(tmp_path, "a", ballast=100 << 10))
    deploy(redis_client, _folder(tmp_path, "b", ballast=100 << 10))
    with pytest.raises(DeployError) as e:
        deploy(redis_client, _folder(tmp_path, "c", ballast=100 << 10))
    msg = str(e.value)
    assert "tenant 'acme'" in msg and "acme/c" in msg
    assert f"limit of {250 << 10} bytes" in msg and "CONNECTOR_MAX_TENANT_BUNDLE_BYTES" in msg
    # Nothing already deployed is lost; the refused one left nothing behind.
    for name in ("a", "b"):
        d = get_deployment(redis_client, "acme", name)
        assert redis_client.exists(f"{redis_prefix[0]}:acme:{name}:bundle:{d.bundle}")
    assert not _bundle_keys(redis_client, redis_prefix[0], "acme", "c")
    with pytest.raises(registry.NotDeployed):
        get_deployment(redis_client, "acme", "c")
    # Another tenant has its own quota.
    deploy(redis_client, _folder(tmp_path, "c", tenant="other", ballast=100 << 10))
    # An operator's override for the tenant raises it.
    ceilings.set_tenant_ceilings(redis_client, "acme", {"bundle_bytes": "1m"})
    deploy(redis_client, _folder(tmp_path, "c", ballast=100 << 10))


def test_redeploying_within_the_quota_counts_the_bundles_it_frees(redis_prefix,
                                                                  redis_client, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("CONNECTOR_MAX_TENANT_BUNDLE_BYTES", str(250 << 10))
    settings.cache_clear()
    for v in range(5):  # two versions fit; each deploy frees the one before them
        deploy(redis_client, _folder(tmp_path, "a", ballast=100 << 10, version=v))
    assert len(_bundle_keys(redis_client, redis_prefix[0], "acme", "a")) == 2


def test_concurrent_deploys_cannot_exceed_the_quota(redis_prefix, redis_client, tmp_path,
                                                    monkeypatch):
    monkeypatch.setenv("CONNECTOR_MAX_TENANT_BUNDLE_BYTES", str(350 << 10))
    settings.cache_clear()
    folders = [_folder(tmp_path, f"n{i}", ballast=100 << 10) for i in range(8)]
    ok, refused = [], []

    def run(f: Path) -> None:
        try:
            deploy(redis_client, f)
            ok.append(f)
        except DeployError:
            refused.append(f)

    threads = [threading.Thread(target=run, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 3 and len(refused) == 5
    stored = sum(redis_client.strlen(k) for k in
                 redis_client.scan_iter(match=f"{redis_prefix[0]}:acme:*:bundle:*"))
    assert stored <= 350 << 10


def test_a_worker_keeps_a_bounded_number_of_versions(redis_prefix, redis_client, tmp_path,
                                                     monkeypatch):
    cache = tmp_path / "bundles"
    monkeypatch.setenv("CONNECTOR_BUNDLE_CACHE", str(cache))
    monkeypatch.setenv("CONNECTOR_LOADED_CONNECTORS", "3")
    monkeypatch.setenv("CONNECTOR_BUNDLE_CACHE_BYTES", str(300 << 10))
    monkeypatch.setenv("CONNECTOR_SESSION_IDLE", "0")
    settings.cache_clear()
    monkeypatch.setattr(jobs, "_connectors", type(jobs._connectors)())
    ctx = SimpleNamespace(redis=redis_client)
    keys = []
    for i in range(10):
        d = deploy(redis_client, _folder(tmp_path, f"n{i}", ballast=100 << 10))
        keys.append(SessionKey("acme", f"n{i}", d.bundle))
        jobs._connector(ctx, keys[-1])  # type: ignore[arg-type]
    assert len(jobs._connectors) <= 3
    on_disk = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert on_disk <= 300 << 10
    # An evicted version loads again when a job needs it.
    assert jobs._connector(ctx, keys[0]).spec.name == "n0"  # type: ignore[arg-type]
    assert registry.bundle_dir("acme", "n0", keys[0].bundle).is_dir()


def _record(redis_client, name: str, rid: str) -> RefreshRecord | None:
    return RedisState(redis_client, "acme", name).refresh(rid)


def test_a_refresh_of_a_superseded_version_completes_while_new_ones_land(queue_env,
                                                                         tmp_path,
                                                                         redis_client):
    c = PlanConnector(tmp_path, "slow", "acme")
    c.set({f"f{i}": {"fp": "1", "rows": [i], "sleep": 1.5} for i in range(4)})
    queue_env.deploy(c.folder)
    first = get_deployment(redis_client, "acme", "slow").bundle
    # Two workers with their own caches: the second fetches the version from Redis.
    queue_env.start_workers(1, env={"CONNECTOR_BUNDLE_CACHE": str(tmp_path / "w1")})
    queue_env.start_workers(1, env={"CONNECTOR_BUNDLE_CACHE": str(tmp_path / "w2")})
    rid = queue_env.start("slow", "acme")
    wait_until(c.reads, timeout=120, message=queue_env.logs)
    for v in range(2):  # two deploys: the running refresh's version is not even previous
        (c.folder / "notes.txt").write_text(f"v{v}")
        queue_env.deploy(c.folder)
    prefix = queue_env.env["CONNECTOR_REDIS_PREFIX"]
    assert redis_client.exists(f"{prefix}:acme:slow:bundle:{first}")
    wait_until(lambda: (r := _record(redis_client, "slow", rid)) and r.status != "running",
               timeout=180, message=queue_env.logs)
    record = _record(redis_client, "slow", rid)
    assert record is not None and record.status == "ok", (record, queue_env.logs())
    assert record.summary.read == 4
    # The next deploy drops the version no refresh needs any more.
    (c.folder / "notes.txt").write_text("v3")
    queue_env.deploy(c.folder)
    assert not redis_client.exists(f"{prefix}:acme:slow:bundle:{first}")
    assert len(_bundle_keys(redis_client, prefix, "acme", "slow")) == 2
