"""A CSV quote that never closes is reported as that, naming the line it opened on,
rather than as a wrong field count over the lines it swallowed."""

from __future__ import annotations

import pytest

from tests.helpers.rows import read
from worker.runtime.formats import ParseError

CODE = """
def list_objects(context, metadata):
    yield {{"name": "people.csv", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield {data!r}
"""

# quoted newlines allowed: a quote that never closes is told from one that spans lines
UNTYPED = "name: people\nparser: {newlines_in_values: true}\n"
# a declared int64 column: the typed CSV path (worker/runtime/formats/xsv_typed.py)
TYPED = ("name: people\nparser: {newlines_in_values: true}\nschema: [{name: id, type: int64}, "
         "{name: name, type: string}, {name: city, type: string}]\n")


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


# --------------------------------------------------------------------------- newlines

SWALLOWED = b'id,name\n1,"abc\n2,def"\n3,ghi\n'  # the quote takes line 3 into row 1
TYPES = pytest.mark.parametrize("columns", [None, [{"name": "id", "type": "int64"},
                                                 {"name": "name"}]], ids=["text", "typed"])


@TYPES
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_quote_that_runs_onto_the_next_line_fails_naming_its_line(columns, chunk) -> None:
    for policy in ({}, {"on_invalid": "skip", "max_errors": 10}):
        with pytest.raises(ParseError) as e:
            read(SWALLOWED, columns, chunk=chunk, **policy)
        assert str(e.value) == (
            "xsv: line 2: the quote opened on this line runs onto the next one; set "
            "parser.newlines_in_values: true if values may hold newlines"), e.value


@TYPES
def test_quoted_newlines_when_allowed_are_read_and_counted(columns) -> None:
    data = SWALLOWED + b'4,"x\ny\nz"\n'
    out, log = read(data, columns, parser={"newlines_in_values": True})
    assert [r["name"] for r in out] == ["abc\n2,def", "ghi", "x\ny\nz"]
    assert log.read == 3
    assert ("fragment 'f': 2 row(s) hold newlines inside quotes, 5 lines in all; the "
            "first starts on line 2") in log.warnings


def test_no_quoted_newline_no_note() -> None:
    out, log = read(b'id,name\n1,"a,b"\n2,c\n', parser={"newlines_in_values": True})
    assert len(out) == 2 and log.warnings == []


@pytest.mark.parametrize("chunk", range(1, 12))
def test_escaped_quotes_split_across_chunks_open_no_quote(chunk) -> None:
    data = b'a,b\n"say \\"hi\\" \\\\",2\n"x\\\\",3\n'
    out, _ = read(data, chunk=chunk, parser={"escape": "\\"})
    assert out == [{"a": 'say "hi" \\', "b": "2"}, {"a": "x\\", "b": "3"}]
