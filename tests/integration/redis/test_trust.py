"""The multi-tenant trust boundary in queue mode, against a real Redis and real workers:
what one tenant supplies never reaches another tenant's schedule, data or credentials,
nor the worker's own secrets, and setup errors are the tenant's, reported once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE, write_connector
from tests.helpers.connectors import PlanConnector
from tests.helpers.wait import wait_until
from worker.models import RefreshRecord

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


def _finished(queue_env, redis_client, name: str, rid: str) -> RefreshRecord:
    """Refresh `rid` of acme/`name` once it has ended (the workers decide when)."""
    from worker.state.redis import RedisState

    state = RedisState(redis_client, "acme", name)

    def ended() -> RefreshRecord | None:
        rec = state.refresh(rid)
        return rec if rec is not None and rec.status != "running" else None

    return wait_until(ended, 60, queue_env.logs, interval=0.2)


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


@pytest.mark.parametrize("damage", ["escaping-entry", "hash-mismatch", "not-deployed",
                                    "other-tenants-spec"])
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
    elif damage == "other-tenants-spec":
        # the bundle's own connector.yaml claims tenant `victim`: its rows would land in
        # victim's dataset if the worker trusted the bundle over the deployment's key
        from worker.bundle import make_bundle

        spec = c.folder / "connector.yaml"
        spec.write_text(spec.read_text().replace("tenant: acme", "tenant: victim"))
        _tamper_bundle(redis_client, "acme", "broken", make_bundle(c.folder)[0])
        expected = "holds connector 'victim/broken'"
    elif damage == "hash-mismatch":
        _tamper_bundle(redis_client, "acme", "broken", b"not the bundle", "f" * 64)
        expected = "does not match its hash"
    rid = queue_env.start("broken", "acme")
    if damage == "not-deployed":
        redis_client.delete(ConnectorKeys("acme", "broken").deployment)
        expected = "no connector 'acme/broken' is deployed"
    queue_env.start_workers(1)

    [failure] = _finished(queue_env, redis_client, "broken", rid).summary.failures
    assert failure.kind == "user", failure
    assert expected in failure.message, failure.message
    assert "after retries" not in failure.message
    assert "Traceback" not in queue_env.logs()
    assert not (queue_env.output / "victim").exists()


ONE_ROW_CODE = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield '{"x": 1}\\n'
"""

ECHO_SPEC = """
name: {name}
tenant: {tenant}
credentials: {creds}
schema:
  - {{name: got, type: string}}
"""


def test_deploy_refuses_worker_env_references(queue_env, connector) -> None:
    c = connector(ECHO_CODE, ECHO_SPEC.format(name="byenv", tenant="evil",
                                              creds="{env: SOME_TOKEN}"), name="byenv")
    r = queue_env.cli("deploy", str(c), "--credentials-ref")
    assert r.returncode == 2, r.stdout
    assert ("credentials.env cannot be stored as a reference: worker environment "
            "variables are never a credential source") in " ".join(r.stderr.split())


def test_credential_references_stay_inside_the_tenants_directory(queue_env, connector,
                                                                 redis_client,
                                                                 tmp_path: Path) -> None:
    """Tenant `evil` points its stored reference at the worker's key, the worker's
    environment and tenant `victim`'s credentials file (as a forged or old deployment
    record would): each refresh fails as evil's error and no row holds the secret."""
    from cryptography.fernet import Fernet

    from worker.registry import StoredCredentials, get_deployment
    from worker.state.keys import ConnectorKeys

    key = Fernet.generate_key().decode()
    creds_dir = tmp_path / "creds"
    victim = creds_dir / "victim" / "vconn"
    victim.mkdir(parents=True)
    (victim / "secret.txt").write_text("victim-secret-7731")
    mine = creds_dir / "evil" / "mine"
    mine.mkdir(parents=True)
    (mine / "token.txt").write_text("evil-own-token")
    (mine / "link.txt").symlink_to(victim / "secret.txt")

    (creds_dir / "evil" / "ok").mkdir()
    (creds_dir / "evil" / "ok" / "token.txt").write_text("evil-own-token")
    for name in ("ok", "mine"):
        c = connector(ECHO_CODE, ECHO_SPEC.format(name=name, tenant="evil",
                                                  creds="{file: token.txt}"), name=name)
        queue_env.deploy(c, "--credentials-ref")
    worker_env = {"CONNECTOR_SECRET_KEY": key, "CONNECTOR_CREDENTIALS_DIR": str(creds_dir),
                  "WORKER_ONLY_SECRET": "worker-env-secret-9913"}
    queue_env.start_workers(1, env=worker_env)

    # a reference inside its own directory works
    r, s = queue_env.refresh("ok", "evil")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert [r["got"] for r in queue_env.rows("ok", "evil")] == ["evil-own-token"]

    k = ConnectorKeys("evil", "mine")
    attacks = {
        "env-key": (StoredCredentials(env="CONNECTOR_SECRET_KEY"),
                    "worker environment variables are never a credential source"),
        "env-other": (StoredCredentials(env="WORKER_ONLY_SECRET"),
                      "worker environment variables are never a credential source"),
        "proc-environ": (StoredCredentials(file="/proc/self/environ"),
                         "'/proc/self/environ' is an absolute path"),
        "other-tenant": (StoredCredentials(file="../../victim/vconn/secret.txt"),
                         "'../../victim/vconn/secret.txt' leaves"),
        "symlink": (StoredCredentials(file="link.txt"),
                    "link.txt resolves outside"),
    }
    secrets_ = ("victim-secret-7731", "worker-env-secret-9913", key)
    for attack, (stored, needle) in attacks.items():
        d = get_deployment(redis_client, "evil", "mine")
        forged = d.model_copy(update={"credentials": stored})
        redis_client.set(k.deployment, forged.model_dump_json(by_alias=True))
        r, s = queue_env.refresh("mine", "evil")
        out = r.stdout + r.stderr
        assert "failed (user)" in out, (attack, out, queue_env.logs())
        assert needle in " ".join(r.stderr.split()), (attack, r.stderr)
        rows = queue_env.cli("show", "mine", "--tenant", "evil", "--jsonl").stdout
        for secret in secrets_:
            assert secret not in out + rows + queue_env.logs(), (attack, secret)


def test_tenant_ceilings_hold_at_deploy_and_on_the_worker(queue_env, tmp_path: Path,
                                                          redis_client) -> None:
    """The operator lowers one tenant's memory ceiling: that tenant may no longer deploy
    a connector asking more, another tenant still may, and a version deployed before
    the change fails on the worker (a limit failure, not retried) instead of
    running with the old limits."""
    big = "limits: {memory: 512m}\n"
    early = PlanConnector(tmp_path / "e", "early", "small", extra_spec=big)
    early.set({"a": {"fp": "1", "rows": [1]}})
    queue_env.deploy(early.folder)

    r = queue_env.cli("ceilings", "small", "--memory", "256m", "--pids", "64")
    assert r.returncode == 0, r.stderr
    assert "memory" in r.stdout and "256 MiB" in r.stdout
    r = queue_env.cli("ceilings", "small", "--memory", "lots")
    assert r.returncode == 2 and "not a size" in r.stderr

    late = PlanConnector(tmp_path / "l", "late", "small", extra_spec=big)
    r = queue_env.cli("deploy", str(late.folder))
    assert r.returncode == 2, r.stdout
    assert ("limits.memory: 512 MiB is over the operator's ceiling of 256 MiB (tenant "
            "override (connector ceilings small))") in " ".join(r.stderr.split())
    other = PlanConnector(tmp_path / "o", "late", "roomy", extra_spec=big)
    queue_env.deploy(other.folder)

    queue_env.start_workers(1)
    r, s = queue_env.refresh("early", "small")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed (limit)" in r.stderr
    assert "limits.memory: 512 MiB is over the operator's ceiling of 256 MiB" in r.stderr
    assert early.reads() == []


def test_a_stored_deployment_the_rules_now_refuse_fails_as_the_tenants_error(
        queue_env, tmp_path: Path, redis_client) -> None:
    """A deployment stored before today's rules (here: an absolute credentials file,
    allowed then) is refused on the worker once, naming the field, not retried."""
    import json

    from worker.state.keys import ConnectorKeys

    c = PlanConnector(tmp_path, "stale", "acme")
    c.set({"a": {"fp": "1", "rows": [1]}})
    queue_env.deploy(c.folder)
    queue_env.env["CONNECTOR_RETRY_INTERVALS"] = "1,1,1"
    rid = queue_env.start("stale", "acme")  # queued before the record turns stale
    k = ConnectorKeys("acme", "stale")
    raw = json.loads(redis_client.get(k.deployment))
    raw["spec"]["credentials"] = {"env": None, "file": "/etc/shadow"}
    raw["credentials"] = {"sealed": None, "env": None, "file": "/etc/shadow"}
    redis_client.set(k.deployment, json.dumps(raw))
    queue_env.start_workers(1)

    [failure] = _finished(queue_env, redis_client, "stale", rid).summary.failures
    assert failure.kind == "user", failure
    assert "stored deployment of 'acme/stale' is not valid" in failure.message
    assert "'/etc/shadow' is an absolute path" in failure.message
    for args in (("status", "stale", "--tenant", "acme"),
                 ("refresh", "stale", "--tenant", "acme", "--queue")):
        r = queue_env.cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "stored deployment of 'acme/stale' is not valid" in r.stderr


def test_sealed_credentials_open_only_for_the_connector_they_were_sealed_for(
        queue_env, connector, redis_client) -> None:
    """Whoever can write Redis copies tenant `victim`'s sealed token into `evil`'s
    deployment: as the token alone, as the whole record (which names `victim`), and
    into another connector of the victim's own tenant. The token does not open (the
    refresh fails as the tenant's error), the copied record is refused when the refresh
    is asked for; the secret reaches no row, output or log."""
    from cryptography.fernet import Fernet

    from worker.registry import get_deployment
    from worker.state.keys import ConnectorKeys

    key = Fernet.generate_key().decode()
    secret = "victim-sealed-secret-5521"
    queue_env.env["CONNECTOR_SECRET_KEY"] = key
    victim = connector(ECHO_CODE, ECHO_SPEC.format(name="vconn", tenant="victim",
                                                   creds="{env: VICTIM_TOKEN}"), name="v")
    queue_env.deploy(victim, env={"VICTIM_TOKEN": secret})
    for tenant, name in (("evil", "mine"), ("victim", "other")):
        c = connector(ECHO_CODE, ECHO_SPEC.format(name=name, tenant=tenant,
                                                  creds="{env: OWN_TOKEN}"), name=name)
        queue_env.deploy(c, env={"OWN_TOKEN": f"{tenant}-own-token"})
    queue_env.start_workers(1)

    r, _ = queue_env.refresh("vconn", "victim")  # the victim's own token opens
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert [x["got"] for x in queue_env.rows("vconn", "victim")] == [secret]

    stolen = get_deployment(redis_client, "victim", "vconn")
    attacks = {
        "token into another tenant": ("evil", "mine", False),
        "token into the tenant's other connector": ("victim", "other", False),
        "whole record into another tenant": ("evil", "mine", True),
    }
    for attack, (tenant, name, whole) in attacks.items():
        own = get_deployment(redis_client, tenant, name)
        forged = (stolen.model_copy(update={"bundle": own.bundle}) if whole
                  else own.model_copy(update={"credentials": stolen.credentials}))
        redis_client.set(ConnectorKeys(tenant, name).deployment,
                         forged.model_dump_json(by_alias=True))
        r, _ = queue_env.refresh(name, tenant)
        out = r.stdout + r.stderr
        if whole:
            assert r.returncode == 2, (attack, out)
            assert f"stored deployment of '{tenant}/{name}' names another connector" in out
        else:
            assert r.returncode == 1, (attack, out)
            assert "failed (user)" in out, (attack, out, queue_env.logs())
            assert "were not sealed for this connector" in " ".join(out.split()), out
        rows = queue_env.cli("show", name, "--tenant", tenant, "--jsonl").stdout
        assert secret not in out + rows + queue_env.logs(), attack


def test_a_hostile_lock_runs_nothing_on_the_worker(queue_env, tmp_path: Path,
                                                   redis_client) -> None:
    """A tenant's connector.lock names a source distribution whose build backend would
    run on the worker (host) while pip resolves it for the Docker image. `deploy`
    refuses it; a bundle written to Redis with it anyway fails on the worker as the
    tenant's error, before pip sees the line."""
    from tests.helpers.sdists import backend_sdist
    from worker.bundle import make_bundle

    marker = tmp_path / "backend-ran"
    sdist = backend_sdist(tmp_path, marker)
    queue_env.env.update({"CONNECTOR_SANDBOX": "docker", "CONNECTOR_RETRY_INTERVALS": "1,1,1"})
    folder = write_connector(tmp_path / "c", ONE_ROW_CODE, """
        name: locked
        tenant: acme
        packages: ['six==1.16.0']
        parser: {format: json}
        """)
    queue_env.deploy(folder)
    line = f"evil @ file://{sdist}"
    (folder / "connector.lock").write_text(
        f'# connector lock\n# packages: ["six==1.16.0"]\nsix==1.16.0\n{line}\n')

    r = queue_env.cli("deploy", str(folder))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"connector.lock line 4: {line!r} is not name==version" in " ".join(r.stderr.split())

    _tamper_bundle(redis_client, "acme", "locked", make_bundle(folder)[0])
    queue_env.start_workers(1)
    r, _ = queue_env.refresh("locked", "acme")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, out + queue_env.logs()
    assert "failed (user)" in out and f"{line!r} is not name==version" in out, out
    assert not marker.exists(), marker.read_text()
    assert queue_env.rows("locked", "acme") == []


def test_an_alias_bomb_in_a_bundle_is_refused_on_the_worker(queue_env, tmp_path: Path,
                                                           redis_client) -> None:
    """A bundle written with the tenant's own client holds a connector.yaml of nested
    YAML aliases (a few hundred bytes standing for ten million values): the worker
    refuses it as the tenant's error instead of spending its memory on it."""
    from tests.unit.test_trust_spec import alias_bomb
    from worker.bundle import make_bundle

    queue_env.env["CONNECTOR_RETRY_INTERVALS"] = "1,1,1"
    folder = write_connector(tmp_path / "c", ONE_ROW_CODE, "name: bomb\ntenant: acme\n"
                             "parser: {format: json}\n")
    queue_env.deploy(folder)
    (folder / "connector.yaml").write_text(alias_bomb(6).replace(
        "name: bomb\n", "name: bomb\ntenant: acme\n"))
    _tamper_bundle(redis_client, "acme", "bomb", make_bundle(folder)[0])
    queue_env.start_workers(1)
    r, _ = queue_env.refresh("bomb", "acme")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, out + queue_env.logs()
    assert "failed (user)" in out and "expands to more than 200000 values" in out, out
