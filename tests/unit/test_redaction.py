"""Credentials never leave the sandbox in error text: messages, tracebacks and logs are
redacted of the raw credentials string and of every string value inside it (JSON)."""

from __future__ import annotations

import json

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-Zx81!q\"uote"
CREDENTIALS = json.dumps({"token": TOKEN, "nested": {"password": PASSWORD}, "port": 5432})

LEAKY_CODE = '''
import json, sys

def context(credentials):
    creds = json.loads(credentials)
    print("connecting with", credentials)                  # the log
    print("token is", creds["token"], file=sys.stderr)
    return creds

def list_objects(context, metadata):
    yield {"name": "int", "fingerprint": "1"}
    yield {"name": "repr", "fingerprint": "1"}

def read_bytes(context, metadata):
    if metadata["name"] == "int":
        yield "a\\n1\\n"
        int(context["token"])                              # the message and traceback
    raise RuntimeError(repr(context["nested"]["password"]))
'''


def test_credentials_are_redacted_from_messages_tracebacks_and_logs(connector, cli):
    c = connector(LEAKY_CODE, "name: leaky\ncredentials: {file: creds.json}\n",
                  files={"creds.json": CREDENTIALS})
    r, s = cli.refresh(c, "--concurrency", "2")
    assert r.returncode == 1, r.stderr
    assert s["failed"] >= 1
    assert "ValueError: invalid literal for int()" in r.stderr or "RuntimeError" in r.stderr
    assert "[redacted]" in r.stderr, r.stderr
    for secret in (TOKEN, PASSWORD, repr(PASSWORD)[1:-1], json.dumps(PASSWORD)[1:-1]):
        assert secret not in r.stderr + r.stdout, secret

    t = cli("test", str(c), "--sandbox", "process")
    assert "[redacted]" in t.stdout + t.stderr
    for secret in (TOKEN, PASSWORD, repr(PASSWORD)[1:-1], json.dumps(PASSWORD)[1:-1]):
        assert secret not in t.stdout + t.stderr, secret
