"""A failure's text is the tenant's: a huge exception message must not be stored whole.

Redis is shared by every tenant and runs with `noeviction`: a tenant that can make each
refresh record carry hundreds of MiB (a message is kept in the running refresh's
failures, then in its record, and 100 records are kept per connector) can fill it, and
then every tenant's writes fail. Real Redis, a real worker, the process sandbox.
"""

from __future__ import annotations

import pytest

from tests.helpers.connectors import PlanConnector
from worker.state.keys import ConnectorKeys

pytestmark = pytest.mark.redis

HUGE = 24 << 20  # characters of read_bytes' exception message
LISTING = 6 << 20  # list_objects': a listing's control frames are capped at 16 MiB anyway

LOUD_CODE = '''
import json, pathlib
PLAN = pathlib.Path({plan!r})
READS = pathlib.Path({reads!r})

def list_objects(context, metadata):
    names = json.loads(PLAN.read_text())
    if "fail-listing" in names:
        raise RuntimeError("L" * LISTING_CHARS)
    for name in names:
        yield {{"name": name, "fingerprint": "1"}}

def read_bytes(context, metadata):
    raise RuntimeError("R" * READ_CHARS)
''' + f"\nLISTING_CHARS = {LISTING}\nREAD_CHARS = {HUGE}\n"


def _stored_bytes(redis_client, tenant: str, name: str) -> int:
    k = ConnectorKeys(tenant, name)
    total = 0
    for key in redis_client.scan_iter(match=f"{k.base}:*", count=1000):
        kind = redis_client.type(key)
        if kind == b"hash":
            total += sum(len(v) for v in redis_client.hvals(key))
        elif kind == b"list":
            total += sum(len(v) for v in redis_client.lrange(key, 0, -1))
        elif kind == b"string":
            total += redis_client.strlen(key)
    return total


@pytest.mark.parametrize("where", ["read", "listing"])
def test_a_huge_failure_message_is_stored_cut(queue_env, tmp_path, redis_client, where):
    c = PlanConnector(tmp_path, f"loud_{where}", "evil", code=LOUD_CODE)
    c.set({"fail-listing": {}} if where == "listing" else {"one": {}})
    queue_env.deploy(c.folder)
    queue_env.start_workers(1)
    r, s = queue_env.refresh(f"loud_{where}", "evil", timeout=400)
    assert r.returncode == 1, r.stderr[-2000:] + queue_env.logs()
    assert s["failed"] == 1, s
    stored = _stored_bytes(redis_client, "evil", f"loud_{where}")
    assert stored < 1 << 20, stored  # not the message (nor twice it)
    st = queue_env.cli("status", f"loud_{where}", "--tenant", "evil")
    assert st.returncode == 0, st.stderr[-2000:]
    assert "RuntimeError" in st.stderr and "characters cut" in st.stderr, st.stderr[-3000:]
