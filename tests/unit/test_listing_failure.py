"""A failed listing is reported as the listing's failure, never as a fragment's: a
fragment may be named anything, `(listing)` included."""

from __future__ import annotations

BROKEN_LISTING = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}
    raise ConnectionError("remote unreachable")

def read_bytes(context, metadata):
    yield "id\\n1\\n"
"""

FRAGMENT_NAMED_LISTING = """
def list_objects(context, metadata):
    yield {"name": "(listing)", "fingerprint": "1"}

def read_bytes(context, metadata):
    raise ValueError("cannot read this one")
"""


def test_a_listing_failure_is_the_listings_not_a_fragments(connector, cli):
    c = connector(BROKEN_LISTING, "name: lister\n")
    r, s = cli.refresh(c)
    assert r.returncode == 1 and s["failed"] == 1, r.stderr
    assert "listing failed (user): list_objects({}) raised ConnectionError: remote " \
        "unreachable" in r.stderr, r.stderr
    assert "fragment" not in r.stderr, r.stderr
    st = cli("status", str(c))  # the run record says the same
    assert st.returncode == 0, st.stderr
    assert "listing failed (user)" in st.stderr and "fragment" not in st.stderr, st.stderr


def test_a_fragment_named_like_the_listing_is_a_fragment(connector, cli):
    c = connector(FRAGMENT_NAMED_LISTING, "name: named\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1, r.stderr
    assert "fragment '(listing)' failed (user)" in r.stderr, r.stderr
    assert "\nlisting failed" not in r.stderr and not r.stderr.startswith("listing failed")
