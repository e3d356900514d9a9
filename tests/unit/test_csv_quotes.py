"""A CSV quote that never closes is reported as that, naming the line it opened on,
rather than as a wrong field count over the lines it swallowed."""

from __future__ import annotations

import pytest

CODE = """
def list_objects(context, metadata):
    yield {{"name": "people.csv", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield {data!r}
"""

UNTYPED = "name: people\n"
# a declared int64 column: the typed CSV path (worker/runtime/formats/xsv_typed.py)
TYPED = ("name: people\nschema: [{name: id, type: int64}, {name: name, type: string}, "
         "{name: city, type: string}]\n")


@pytest.mark.parametrize("spec", [UNTYPED, TYPED], ids=["streaming", "typed"])
@pytest.mark.parametrize(("data", "opened"), [
    ('id,name,city\n1,alice,x\n2,"bob,y\n3,carol,z\n4,dave,w\n', 3),
    # the row starts on line 3; its first quoted value closes on line 4, the next never
    ('id,name,city\n1,alice,x\n2,"bob\nsmith",x,"open\n3,carol,z\n', 4),
])
def test_an_unclosed_quote_names_the_line_it_opened_on(connector, cli, spec, data, opened):
    c = connector(CODE.format(data=data), spec)
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"people.csv failed (data): xsv: the quote opened on line {opened} (row 2) is never "
            "closed") in r.stderr, r.stderr
    assert "fields, got" not in r.stderr, r.stderr
