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
    gate = tmp_path / "deploys-done"  # the refresh outlives the deploys, however slow
    c.set({f"f{i}": {"fp": "1", "rows": [i], "gate": str(gate)} for i in range(4)})
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
    gate.touch()
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


# --- bundles stored before bundle accounting existed ------------------------------------


def _deploy_as_before_accounting(redis_client, folder: Path) -> str:
    """Store a version as deploys did before bundles were counted: the bundle and the
    deployment record, and nothing about either in the tenant's accounting."""
    import time

    from worker.bundle import make_bundle
    from worker.spec import load_connector
    from worker.state import keys
    from worker.state.keys import ConnectorKeys

    spec = load_connector(folder).spec
    data, digest = make_bundle(folder)
    d = registry.Deployment(tenant=spec.tenant, name=spec.name, bundle=digest, spec=spec,
                            credentials=None, deployed_at=time.time())
    k = ConnectorKeys(spec.tenant, spec.name)
    with redis_client.pipeline(transaction=True) as p:
        p.set(k.bundle(digest), data)
        p.set(k.deployment, d.model_dump_json(by_alias=True))
        p.sadd(keys.tenant_connectors(spec.tenant), spec.name)
        p.sadd(keys.tenants(), spec.tenant)
        p.execute()
    return digest


def _stored(redis_client, prefix: str, name: str) -> set[str]:
    return {k.decode().rsplit(":", 1)[1]
            for k in _bundle_keys(redis_client, prefix, "acme", name)}


def test_bundles_stored_before_accounting_are_counted_and_collected(redis_prefix,
                                                                   redis_client, tmp_path):
    from worker.queue.enqueue import enqueue_list
    from worker.queue.tracker import Tracker
    from worker.state.keys import ConnectorKeys

    prefix = redis_prefix[0]
    old = [_deploy_as_before_accounting(redis_client, _folder(tmp_path, "old", version=v))
           for v in range(3)]
    # A refresh started before the upgrade runs the superseded busy[0] and has no pin.
    busy = [_deploy_as_before_accounting(redis_client, _folder(tmp_path, "busy", version=v))
            for v in range(2)]
    assert Tracker(redis_client, "acme", "busy", "r1old").acquire() is None
    enqueue_list(redis_client, "acme", "busy", "r1old", busy[0], 60)
    # One whose jobs are gone: which version it runs cannot be told.
    lost = [_deploy_as_before_accounting(redis_client, _folder(tmp_path, "lost", version=v))
            for v in range(2)]
    assert Tracker(redis_client, "acme", "lost", "r2old").acquire() is None

    deploy(redis_client, _folder(tmp_path, "new"))  # the first deploy after the upgrade

    assert _stored(redis_client, prefix, "old") == {old[-1]}  # the current version only
    assert _stored(redis_client, prefix, "busy") == set(busy)
    assert redis_client.get(ConnectorKeys("acme", "busy").bundle_pin).decode() == busy[0]
    assert _stored(redis_client, prefix, "lost") == set(lost)
    every = [k for n in ("old", "busy", "lost", "new")
             for k in _bundle_keys(redis_client, prefix, "acme", n)]
    counted = int(redis_client.get(f"{prefix}:tenant-bundle-bytes:acme"))
    assert counted == sum(redis_client.strlen(k) for k in every)

    # From now on they are ordinary versions: when the busy refresh ends, the next
    # deploy keeps the current and the previous version only.
    Tracker(redis_client, "acme", "busy", "r1old").release()
    deploy(redis_client, _folder(tmp_path, "busy", version=9))
    assert busy[0] not in _stored(redis_client, prefix, "busy")
    assert busy[1] in _stored(redis_client, prefix, "busy")


def test_bundles_stored_before_accounting_count_against_the_quota(redis_prefix,
                                                                 redis_client, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("CONNECTOR_MAX_TENANT_BUNDLE_BYTES", str(250 << 10))
    settings.cache_clear()
    _deploy_as_before_accounting(redis_client, _folder(tmp_path, "a", ballast=200 << 10))
    with pytest.raises(DeployError) as e:
        deploy(redis_client, _folder(tmp_path, "b", ballast=100 << 10))
    assert "tenant 'acme' stores" in str(e.value) and "acme/b" in str(e.value)
    assert get_deployment(redis_client, "acme", "a")  # nothing already deployed is lost


def test_a_worker_counts_bundles_stored_before_accounting_when_it_starts(queue_env,
                                                                        redis_client,
                                                                        tmp_path):
    prefix = queue_env.env["CONNECTOR_REDIS_PREFIX"]
    old = [_deploy_as_before_accounting(redis_client, _folder(tmp_path, "old", version=v))
           for v in range(3)]
    r = queue_env.cli("worker", "--burst")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _stored(redis_client, prefix, "old") == {old[-1]}
    counted = int(redis_client.get(f"{prefix}:tenant-bundle-bytes:acme"))
    assert counted == redis_client.strlen(f"{prefix}:acme:old:bundle:{old[-1]}")
