"""The host's columnar listing and the diff computed on it."""

from __future__ import annotations

import pytest

from worker.listing import Listing
from worker.models import Fragment, FragmentFailure
from worker.protocol import listing_batch
from worker.refresh import diff


def frags(*pairs: tuple[str, str]) -> Listing:
    return Listing.of(Fragment(name=n, fingerprint=f) for n, f in pairs)


def test_extra_keys_reach_read_bytes_unchanged():
    batch = listing_batch([{"name": "a", "fingerprint": "1", "size": 10, "tags": ["x"]},
                           {"name": "b", "fingerprint": "2", "is_prefix": False}])
    [a, b] = Listing.from_batches([batch])
    assert a.metadata() == {"name": "a", "fingerprint": "1", "is_prefix": False,
                            "size": 10, "tags": ["x"]}
    assert b.metadata() == {"name": "b", "fingerprint": "2", "is_prefix": False}


def test_duplicate_names_are_refused_by_the_host_too():
    batch = listing_batch([{"name": "a", "fingerprint": "1"}, {"name": "a", "fingerprint": "2"}])
    with pytest.raises(FragmentFailure, match="yielded the name 'a' twice"):
        Listing.from_batches([batch])


def test_diff_new_changed_unchanged_deleted():
    listed = frags(("new", "1"), ("same", "1"), ("changed", "2"))
    plan = diff(listed, {"same": "1", "changed": "1", "gone": "1"})
    assert [f.name for f in plan.to_read] == ["new", "changed"]
    assert (plan.listed, plan.skipped, plan.deleted) == (3, 1, ["gone"])


def test_diff_of_empty_listing_deletes_everything():
    plan = diff(frags(), {"a": "1", "b": "2"})
    assert plan.to_read == [] and plan.deleted == ["a", "b"] and plan.listed == 0
