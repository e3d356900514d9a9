"""Queue mode under stress: a worker killed mid-fragment, a tenant's backlog, a big
refresh, and credentials at rest."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
import uuid

import pytest

from tests.helpers.connectors import PlanConnector, gen_connector, ids
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis


def test_worker_killed_mid_fragment_job_reruns_elsewhere_rows_exactly_once(queue_env,
                                                                           tmp_path):
    c = PlanConnector(tmp_path, "slow", "acme")
    c.set({f"s{i}": {"fp": "1", "rows": [i, 10 + i], "sleep": 1.5} for i in range(6)})
    queue_env.deploy(c.folder)
    doomed = queue_env.start_workers(1)
    rid = queue_env.start("slow", "acme")
    # the second fragment is being read right now
    wait_until(lambda: len(c.reads()) >= 2, 60, queue_env.logs, interval=0.1)
    queue_env.kill(doomed)  # SIGKILL the whole process group, mid-read
    killed_at = time.monotonic()
    in_flight = c.reads()[-1]

    queue_env.start_workers(1)
    r, s = queue_env.refresh("slow", "acme", timeout=150)  # joins the running refresh
    took = time.monotonic() - killed_at
    assert f"joining {rid}" in r.stderr
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert took < 90, f"refresh took {took:.0f} s after the kill"
    assert s == {"listed": 6, "read": 6, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 12,
                 "rejected": 0, "defaulted": 0}
    assert c.reads().count(in_flight) == 2  # the killed read ran again, elsewhere
    assert ids(queue_env.rows("slow", "acme")) == sorted(list(range(6)) +
                                                         list(range(10, 16)))


def test_a_tenant_backlog_does_not_hold_back_another_tenant(queue_env, tmp_path,
                                                            redis_client):
    from worker.state.redis import RedisState

    big = PlanConnector(tmp_path, "big", "ta")
    big.set({f"b{i:03d}": {"fp": "1", "rows": [i], "sleep": 0.01} for i in range(500)})
    small = PlanConnector(tmp_path, "small", "tb")
    small.set({f"s{i}": {"fp": "1", "rows": [i]} for i in range(5)})
    queue_env.deploy(big.folder)
    queue_env.deploy(small.folder)
    queue_env.start_workers(1)  # one worker: the backlog competes for it

    big_id = queue_env.start("big", "ta")
    state_a = RedisState(redis_client, "ta", "big")
    # tenant A's 500 fragments are queued once its listing is recorded
    wait_until(lambda: (rec := state_a.refresh(big_id)) and rec.summary.listed, 60,
               queue_env.logs)

    r, s = queue_env.refresh("small", "tb")
    a_done_when_b_done = len(state_a.fingerprints())
    assert r.returncode == 0, r.stderr
    assert s["read"] == 5
    # A's refresh runs on (it may also be over already: its batches are read pipelined)
    wait_until(lambda: state_a.refresh(big_id).status != "running", 120, queue_env.logs)
    a = state_a.refresh(big_id)
    assert a.status == "ok" and a.summary.read == 500, a
    b = RedisState(redis_client, "tb", "small").refreshes(1)[0]
    # Round-robin: B's jobs (list, reads, finalize) alternate with A's batches, so B is
    # done while most of A's backlog still waits; first-come-first-served would have
    # committed all 500 of A's fragments before B's first read.
    assert b.finished < a.finished
    assert a_done_when_b_done < 250, a_done_when_b_done
    print(f"A had committed {a_done_when_b_done} of 500 when B's refresh closed")


def test_5000_fragments_on_2_workers_none_lost_none_read_twice(queue_env, tmp_path):
    n = 5000
    folder, reads = gen_connector(tmp_path, "many", "acme", n)
    queue_env.deploy(folder)
    queue_env.start_workers(2)
    t0 = time.monotonic()
    r, s = queue_env.refresh("many", "acme", timeout=180)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr + queue_env.logs()
    assert s == {"listed": n, "read": n, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": n,
                 "rejected": 0, "defaulted": 0}
    names = reads.read_text().split()
    assert len(names) == n and len(set(names)) == n  # none lost, none read twice
    assert ids(queue_env.rows("many", "acme")) == list(range(n))
    print(f"{n} fragments on 2 workers in {took:.1f} s")


CRED_CODE = '''
import hashlib

def context(credentials):
    return {"digest": hashlib.sha256(credentials.encode()).hexdigest()}

def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "id,digest\\n1," + context["digest"] + "\\n"
'''
CRED_SPEC = """
name: {name}
tenant: sec
credentials: {creds}
schema:
  - {{name: id, type: int64}}
  - {{name: digest, type: string}}
"""


def _all_redis_bytes(redis_client, prefixes: tuple[str, ...]) -> list[bytes]:
    """Every key and value under our prefixes, gzip members unpacked."""
    blobs: list[bytes] = []
    for p in prefixes:
        for k in redis_client.scan_iter(match=f"{p}*"):
            blobs.append(k)
            t = redis_client.type(k).decode()
            if t == "string":
                vals = [redis_client.get(k)]
            elif t == "hash":
                vals = [x for kv in redis_client.hgetall(k).items() for x in kv]
            elif t == "list":
                vals = redis_client.lrange(k, 0, -1)
            elif t == "set":
                vals = list(redis_client.smembers(k))
            elif t == "zset":
                vals = [m for m, _ in redis_client.zrange(k, 0, -1, withscores=True)]
            else:
                vals = []
            for v in vals:
                blobs.append(v)
                if v[:2] == b"\x1f\x8b":
                    blobs.append(gzip.decompress(v))
    return blobs


def test_credentials_are_sealed_at_rest_and_never_in_job_args(queue_env, connector,
                                                              redis_client):
    import hashlib

    from cryptography.fernet import Fernet

    secret_env = f"env-secret-{uuid.uuid4().hex}"
    secret_file = f"file-secret-{uuid.uuid4().hex}"
    key = Fernet.generate_key().decode()
    by_env = connector(CRED_CODE, CRED_SPEC.format(name="by-env", creds="{env: SEC_TOKEN}"),
                       name="by-env")
    by_file = connector(CRED_CODE, CRED_SPEC.format(name="by-file",
                                                    creds="{file: secret.txt}"),
                        name="by-file", files={"secret.txt": secret_file})

    # without a key, storing credentials is refused
    r = queue_env.cli("deploy", str(by_env), env={"SEC_TOKEN": secret_env})
    assert r.returncode == 2
    assert ("CONNECTOR_SECRET_KEY is not set: refusing to store credentials for "
            "'sec/by-env'") in r.stderr

    queue_env.deploy(by_env, env={"SEC_TOKEN": secret_env, "CONNECTOR_SECRET_KEY": key})
    queue_env.deploy(by_file, env={"CONNECTOR_SECRET_KEY": key})
    # the worker has the key but not the env var: it opens the sealed copy
    queue_env.start_workers(1, env={"CONNECTOR_SECRET_KEY": key})
    for name, secret in (("by-env", secret_env), ("by-file", secret_file)):
        r, s = queue_env.refresh(name, "sec")
        assert r.returncode == 0, r.stderr + queue_env.logs()
        (row,) = queue_env.rows(name, "sec")
        assert row["digest"] == hashlib.sha256(secret.encode()).hexdigest()

    prefixes = (queue_env.env["CONNECTOR_REDIS_PREFIX"], queue_env.env["RQ_KEY_PREFIX"])
    blobs = _all_redis_bytes(redis_client, prefixes)
    assert any(b"read_job" in b for b in blobs)  # job payloads were scanned too
    for secret in (secret_env, secret_file):
        assert not any(secret.encode() in b for b in blobs)
    assert secret_env not in queue_env.logs() and secret_file not in queue_env.logs()

    # the credentials file is not in the bundle
    (bundle_key,) = redis_client.scan_iter(match=f"{prefixes[0]}:sec:by-file:bundle:*")
    with tarfile.open(fileobj=io.BytesIO(redis_client.get(bundle_key)), mode="r:gz") as tar:
        names = tar.getnames()
    assert "connector.py" in names and "secret.txt" not in names

    # --credentials-ref stores only the file reference, resolved on the worker under
    # CONNECTOR_CREDENTIALS_DIR/<tenant>/<name>/; an env reference is refused
    r = queue_env.cli("deploy", str(by_file), "--credentials-ref")
    assert r.returncode == 0, r.stderr
    assert "credentials: reference" in r.stdout
    d = json.loads(redis_client.get(f"{prefixes[0]}:sec:by-file:deployment"))
    assert d["credentials"] == {"sealed": None, "env": None, "file": "secret.txt"}
    r = queue_env.cli("deploy", str(by_env), "--credentials-ref")
    assert r.returncode == 2 and "never a credential source" in r.stderr
