"""`schedule.every` is the tenant's: 0s would re-arm a refresh the moment the last one
ends (a loop on the shared workers), and a number of days past what a date can hold
made the deploy (and every finalize job) fail with an OverflowError traceback."""

from __future__ import annotations

import pytest

CODE = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "a,b\\n1,2\\n"
"""


@pytest.mark.parametrize("every", ["0s", "99999999999d", "0d"])
def test_an_interval_out_of_range_is_refused_naming_it(connector, cli, every):
    c = connector(CODE, f"name: x\nschedule: {{every: {every}}}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join(r.stderr.split())
    assert "schedule.every" in text and every in text, r.stderr
    assert "Traceback" not in r.stderr


def test_the_interval_bounds_are_inclusive(connector, cli):
    for every in ("1s", "365d"):
        c = connector(CODE, f"name: x\nschedule: {{every: {every}}}\n")
        r = cli("validate", str(c))
        assert r.returncode == 0, r.stderr
