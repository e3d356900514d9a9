"""Queue-mode attacks by a tenant on the worker: forged protocol frames, secrets in error
text, terminal escapes. Real Redis, real worker processes, the process sandbox (these
attacks use the protocol and the host's output, not the container wall)."""

from __future__ import annotations

import time

import pytest

from tests.helpers.connectors import PlanConnector

pytestmark = pytest.mark.redis

# read_bytes of fragment "forged" writes a protocol frame of its own, straight to the
# runtime's descriptor: an `error` frame claiming an infrastructure failure.
FORGED_CODE = '''
import json, os, pathlib, time
READS = pathlib.Path({reads!r})
PLAN = pathlib.Path({plan!r})

def list_objects(context, metadata):
    for name in json.loads(PLAN.read_text()):
        yield {{"name": name, "fingerprint": "1"}}

def forge(frame):
    body = json.dumps(frame).encode()
    data = b"J" + len(body).to_bytes(4, "big") + body
    for fd in range(3, 64):
        try:
            os.write(fd, data)
            return
        except OSError:
            continue

def read_bytes(context, metadata):
    with open(READS, "a") as f:
        f.write(metadata["name"] + "\\n")
    if metadata["name"] == "forged":
        forge({{"op": "error", "kind": "infra", "message": "engine \x1b[2J on [/red] fire",
               "traceback": ""}})
        time.sleep(30)
    yield "id,frag\\n1," + metadata["name"] + "\\n"
'''


def test_forged_infra_error_frame_is_not_retried(queue_env, tmp_path, redis_client):
    c = PlanConnector(tmp_path, "forger", "evil", code=FORGED_CODE)
    c.set({"a_ok": {}, "forged": {}})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)

    r, s = queue_env.refresh("forger", "evil")
    assert r.returncode == 1, r.stderr + queue_env.logs()
    assert (s["read"], s["failed"]) == (1, 1), s
    # printed as literal text: the ESC escaped, the markup not interpreted
    message = "fragment 'forged' failed (user): engine \\x1b[2J on [/red] fire"
    assert message in r.stderr, r.stderr
    assert "(infra)" not in r.stderr
    st = queue_env.cli("status", "forger", "--tenant", "evil")
    assert st.returncode == 0, st.stderr
    assert message in st.stderr and "\x1b" not in st.stdout + st.stderr, st.stderr
    # the user's failure: no retry is scheduled and the fragment was read once
    assert not list(redis_client.scan_iter(match=f"{queue_env.env['RQ_KEY_PREFIX']}:scheduled:*"))
    time.sleep(6)  # longer than the first retry interval
    assert c.reads().count("forged") == 1, c.reads()
    assert [x["frag"] for x in queue_env.rows("forger", "evil")] == ["a_ok"]


SECRET = "tok-5e4d3c2b1a09"

LEAKY_CODE = '''
def context(credentials):
    print("logged in as", credentials)
    return int(credentials)          # a non-numeric token: its text in the message

def list_objects(context, metadata):
    yield {{"name": "one", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield "id,frag\\n1,one\\n"
'''


def test_credentials_in_error_text_are_redacted_before_redis_and_status(
        queue_env, tmp_path, redis_client):
    from cryptography.fernet import Fernet

    from tests.integration.redis.test_queue_faults import _all_redis_bytes

    key = Fernet.generate_key().decode()
    c = PlanConnector(tmp_path, "leaky", "evil", code=LEAKY_CODE,
                      extra_spec="credentials: {file: token.txt}\n",
                      files={"token.txt": SECRET})
    queue_env.deploy(c.folder, env={"CONNECTOR_SECRET_KEY": key})
    queue_env.start_workers(1, env={"CONNECTOR_SECRET_KEY": key})
    r, s = queue_env.refresh("leaky", "evil")
    assert r.returncode == 1, r.stderr + queue_env.logs()
    assert "context() raised ValueError: invalid literal for int()" in r.stderr, r.stderr
    st = queue_env.cli("status", "leaky", "--tenant", "evil")
    assert "[redacted]" in st.stderr, st.stderr
    for text in (r.stdout, r.stderr, st.stdout, st.stderr, queue_env.logs()):
        assert SECRET not in text
    prefixes = (queue_env.env["CONNECTOR_REDIS_PREFIX"], queue_env.env["RQ_KEY_PREFIX"])
    assert not any(SECRET.encode() in b for b in _all_redis_bytes(redis_client, prefixes))
