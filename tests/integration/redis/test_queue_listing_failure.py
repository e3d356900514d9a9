"""Queue mode reports a failed listing as the listing's, in `--wait` and in `status`."""

from __future__ import annotations

import pytest

from tests.unit.test_listing_failure import BROKEN_LISTING

pytestmark = pytest.mark.redis


def test_a_queued_listing_failure_is_the_listings_not_a_fragments(queue_env, connector):
    c = connector(BROKEN_LISTING, "name: lister\ntenant: acme\n")
    queue_env.deploy(c)
    queue_env.start_workers(1)
    r, s = queue_env.refresh("lister", "acme")
    assert r.returncode == 1 and s["failed"] == 1, r.stderr + queue_env.logs()
    assert "listing failed (user): list_objects({}) raised ConnectionError" in r.stderr, \
        r.stderr
    assert "fragment" not in r.stderr, r.stderr
    st = queue_env.cli("status", "lister", "--tenant", "acme")
    assert st.returncode == 0, st.stderr
    assert "listing failed (user)" in st.stderr and "fragment '" not in st.stderr, st.stderr
