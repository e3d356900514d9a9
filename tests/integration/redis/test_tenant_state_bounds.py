"""One tenant cannot fill the shared Redis: the fragments its connectors keep in state
are capped per tenant (`connector ceilings TENANT --fragments`), and a listing that
would pass the cap fails as a `limit` naming the connector, the count and the setting,
losing nothing already ingested."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.redis

LISTS = '''
import pathlib

def list_objects(context, metadata):
    n = int((pathlib.Path(__file__).parent / "count.txt").read_text())
    for i in range(n):
        yield {"name": f"f{i}", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "name\\n" + metadata["name"] + "\\n"
'''


def _lister(connector, name: str, n: int):  # noqa: ANN001, ANN202 - fixtures
    return connector(LISTS, f"name: {name}\ntenant: acme\n", name=name,
                     files={"count.txt": str(n)})


def test_a_listing_past_the_tenants_fragment_ceiling_fails_and_keeps_the_data(
        queue_env, connector):
    r = queue_env.cli("ceilings", "acme", "--fragments", "5")
    assert r.returncode == 0, r.stderr
    first, second = _lister(connector, "first", 3), _lister(connector, "second", 2)
    queue_env.deploy(first)
    queue_env.deploy(second)
    queue_env.start_workers(1)
    for name in ("first", "second"):
        r, s = queue_env.refresh(name, "acme")
        assert r.returncode == 0, r.stderr + queue_env.logs()

    (second / "count.txt").write_text("4")  # 3 + 4 = 7 fragments: over 5
    queue_env.deploy(second)
    r, s = queue_env.refresh("second", "acme")
    assert r.returncode == 1 and s["failed"] == 1, r.stderr + queue_env.logs()
    assert ("listing failed (limit): connector 'acme/second' listed 4 fragments; with "
            "the 3 its tenant's other connectors keep that is 7, over the tenant's "
            "ceiling of 5 fragments (tenant override (connector ceilings acme))"
            ) in r.stderr, r.stderr
    # nothing already ingested is lost: both keep their rows
    assert sorted(x["name"] for x in queue_env.rows("second", "acme")) == ["f0", "f1"]
    assert len(queue_env.rows("first", "acme")) == 3
    # a connector listing what it already holds is never refused
    r, s = queue_env.refresh("first", "acme")
    assert r.returncode == 0, r.stderr

    r = queue_env.cli("ceilings", "acme", "--fragments", "7")
    assert r.returncode == 0, r.stderr
    r, s = queue_env.refresh("second", "acme")
    assert r.returncode == 0 and s["read"] == 2, r.stderr
    assert len(queue_env.rows("second", "acme")) == 4


def test_a_refresh_keeps_the_text_of_a_bounded_number_of_failures(redis_client, redis_prefix):
    # Every worker's in-flight reads can fail before the refresh stops; each failure
    # keeps up to 24,000 characters, and a connector keeps 100 refresh records.
    from worker.listing import Listing
    from worker.models import FailedFragment, FailureKind, Fragment
    from worker.queue.tracker import MAX_KEPT_FAILURES, Outcome, Tracker

    names = [f"f{i}" for i in range(MAX_KEPT_FAILURES + 30)]
    tr = Tracker(redis_client, "acme", "loud", "r1")
    tr.plan(Listing.of([Fragment(name=n, fingerprint="1") for n in names]), [], [names])
    for n in names:
        tr.account(n, Outcome.FAILED, failure=FailedFragment(
            name=n, kind=FailureKind.USER, message="boom " + "x" * 7000))
    assert tr.counts().failed == len(names)
    kept = tr.failures()
    assert [f.name for f in kept] == names[:MAX_KEPT_FAILURES]


def test_a_tenant_deploys_at_most_its_ceiling_of_connectors(queue_env, connector):
    # Each connector keeps its own state, runs and 100 refresh records: without a
    # ceiling on how many a tenant deploys, every per-connector bound multiplies away.
    r = queue_env.cli("ceilings", "acme", "--connectors", "2")
    assert r.returncode == 0, r.stderr
    a, b, c = (_lister(connector, n, 1) for n in ("one", "two", "three"))
    queue_env.deploy(a)
    queue_env.deploy(b)
    r = queue_env.cli("deploy", str(c))
    assert r.returncode != 0
    assert ("tenant 'acme' has 2 connectors deployed; deploying 'acme/three' would make "
            "3, over its ceiling of 2 (tenant override (connector ceilings acme)); nothing "
            "was changed") in r.stderr, r.stderr
    queue_env.deploy(b)  # a deployed connector is redeployed as before
    r = queue_env.cli("ceilings", "acme", "--connectors", "3")
    assert r.returncode == 0, r.stderr
    queue_env.deploy(c)
