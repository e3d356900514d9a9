"""Declared numeric and bool CSV columns parsed as their type: what a user sees is what
the all-text path (parse every column as text, then cast) gives: rows, rejects, line
numbers, counts and warnings, whatever the blocks and chunks, and a fragment fails in
one exactly when it fails in the other."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.runtime.conform import Conformer, DataError
from worker.runtime.formats import ParseError, parse_into, xsv, xsv_typed
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec, Schema

COLUMNS = [{"name": "id", "type": "int64", "nullable": False},
           {"name": "v", "type": "float64"},
           {"name": "ok", "type": "bool"},
           {"name": "s", "type": "string"}]


@contextlib.contextmanager
def blocks_of(size: int) -> Iterator[None]:
    # both readers: the streaming one's blocks decide which error a fragment fails with
    with mock.patch.object(xsv_typed, "BLOCK_SIZE", size), \
            mock.patch.object(xsv, "BLOCK_SIZE", size):
        yield


def run(data: bytes, chunk: int, columns: list[dict[str, Any]] | None = None,
        parser: dict[str, Any] | None = None, typed: bool = True,
        **schema: Any) -> tuple[Any, ...]:
    """Everything a user sees of one fragment: rows (with their Arrow types), records,
    counts, warnings, or the error."""
    spec = ParserSpec(**(parser or {}))
    sch = Schema.model_validate({"columns": COLUMNS if columns is None else columns,
                                 **schema})
    log = RowRejects("f", sch, spec)
    conformer = Conformer(sch, "f", log)
    out: list[pa.RecordBatch] = []
    stream = ChunkStream([data[i:i + chunk] for i in range(0, len(data), chunk)])
    patch = (contextlib.nullcontext() if typed
             else mock.patch.object(xsv_typed, "parse_types", lambda schema: {}))
    try:
        with patch:
            parse_into(stream, spec, None, lambda b: out.append(conformer.conform(b)),
                       rejects=log)
            conformer.finish()
    except (ParseError, DataError) as e:
        return ("error", type(e).__name__, str(e))
    rows = [r for b in out for r in b.to_pylist()]
    shown: Any = repr(rows) if any(v != v for r in rows for v in r.values()) else rows  # NaN
    types = {str(b.schema) for b in out}
    return (shown, types, [r.to_wire() for r in log.records], log.read, log.written,
            log.rejected, log.defaulted, log.warnings)


def test_typed_columns_come_out_as_the_text_path_makes_them() -> None:
    data = (b"id,v,ok,s\n1, 2.5 ,true,a\n2,,FALSE,\n 3 ,1e3,1,c\n4,inf,0,d\n")
    for size in (24, 64, 1 << 20):
        with blocks_of(size):
            got = run(data, 5)
        assert got == run(data, 5, typed=False)
        assert got[0] == [
            {"id": 1, "v": 2.5, "ok": True, "s": "a"},
            {"id": 2, "v": None, "ok": False, "s": None},
            {"id": 3, "v": 1000.0, "ok": True, "s": "c"},
            {"id": 4, "v": float("inf"), "ok": False, "s": "d"}]


def test_an_invalid_value_in_a_later_block_fails_naming_its_row() -> None:
    rows = [f"{i},1.5,true,x{i}".encode() for i in range(1, 200)]
    rows[150] = b"151,1.5,maybe,x151"
    data = b"id,v,ok,s\n" + b"\n".join(rows) + b"\n"
    with blocks_of(256):
        got = run(data, 100)
    assert got == run(data, 100, typed=False)
    assert got[0] == "error" and "row 151 column 'ok'" in got[2] and "'maybe'" in got[2]


def test_ragged_rows_skipped_by_an_error_limit_name_their_lines() -> None:
    lines = [b"id,v,ok,s", b"1,1,true,a", b"", b"2,2", b"3,3,true,c", b"4,4,true,d,e", b"",
             b"5,5,false,f"]
    data = b"\r\n".join(lines) + b"\r\n"
    for size in (16, 32, 1 << 20):
        for chunk in (3, 11, 1000):
            with blocks_of(size):
                got = run(data, chunk, parser={"max_error_count": 5})
            assert got == run(data, chunk, parser={"max_error_count": 5}, typed=False)
            assert [(r["line"], r["value"]) for r in got[2]] == [(4, "2,2"), (6, "4,4,true,d,e")]
            assert [r["id"] for r in got[0]] == [1, 3, 5]


def test_quotes_later_in_the_fragment_hand_over_to_the_streaming_reader() -> None:
    rows = [f"{i},{i}.5,true,x".encode() for i in range(1, 60)]
    rows[40] = b'41,1,true,"two\nlines"'
    rows[50] = b"51,1"  # ragged, after the hand-over
    data = b"id,v,ok,s\n" + b"\n".join(rows) + b"\n"
    with blocks_of(128):
        got = run(data, 50, parser={"max_error_count": 1, "newlines_in_values": True})
    assert got == run(data, 50, parser={"max_error_count": 1, "newlines_in_values": True},
                      typed=False)
    assert [(r["line"], r["value"]) for r in got[2]] == [(53, "51,1")]
    assert got[0][40]["s"] == "two\nlines" and len(got[0]) == 58


def test_a_malformed_row_after_a_quoted_newline_names_its_line_and_row() -> None:
    rows = [f"{i},{i}.5,true,x".encode() for i in range(1, 60)]
    rows[20] = b'21,1,true,"two\n\nlines"'  # a blank line inside the quotes, too
    rows[40] = b'41,1,true,"two\nlines"'
    rows[50] = b"51,1"
    data = b"id,v,ok,s\n" + b"\n".join(rows) + b"\n"
    quoted = {"newlines_in_values": True}
    for size in (128, 1 << 20):
        with blocks_of(size):
            got = run(data, 50, parser=quoted)
        assert got == run(data, 50, parser=quoted, typed=False)
        assert got[0] == "error" and got[2].startswith(
            "xsv: line 55 (row 51): expected 4 fields, got 2"), got


def test_the_readers_own_errors_count_rows_from_the_start_of_the_file() -> None:
    rows = [f"{i},1,true,x".encode() for i in range(1, 100)]
    rows[80] = b"81,1,true,\xff"  # not UTF-8: the reader's own error names the row
    data = b"id,v,ok,s\n" + b"\n".join(rows) + b"\n"
    with blocks_of(200):
        got = run(data, 64)
    assert got == run(data, 64, typed=False)
    assert got[0] == "error" and "Row #82" in got[2]


def test_columns_read_by_another_or_with_a_default_stay_text_until_conformed() -> None:
    cols = [{"name": "id", "type": "int64"}, {"name": "raw", "source": "id"},
            {"name": "v", "type": "int64", "default": 0}, {"name": "w", "type": "int64"}]
    data = b"id,v,w\n007,,1\n"
    assert run(data, 4, cols) == run(data, 4, cols, typed=False)
    assert run(data, 4, cols)[0] == [{"id": 7, "raw": "007", "v": 0, "w": 1}]


_FIELDS = st.sampled_from(["1", "-2", " 3 ", "x", "", "1.5", "1e2", "true", "False", "0",
                           '"q"', '"a\nb"', '"1"', "nan", "\t4", "\ufeff7", 'a"b',
                           "99999999999999999999", "\xff"])
_LINES = st.one_of(
    st.lists(_FIELDS, min_size=4, max_size=4).map(",".join),
    st.lists(_FIELDS, min_size=1, max_size=6).map(",".join),  # ragged, mostly
    st.sampled_from(["", "\r", "# note"]))


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=30), st.integers(1, 40), st.sampled_from([16, 40, 1 << 20]),
       st.sampled_from([{}, {"max_error_count": 3}, {"comment": "#", "max_error_count": 2},
                        {"header_line_count": 1}]),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_typed_parsing_never_changes_what_the_user_sees(
        lines: list[str], chunk: int, block: int, parser: dict[str, Any], end: str) -> None:
    data = ("id,v,ok,s" + end + end.join(lines) + end).encode()
    with blocks_of(block):
        typed = run(data, chunk, parser=parser)
        text = run(data, chunk, parser=parser, typed=False)
    if typed[0] == "error" and text[0] == "error":
        # Both fail the fragment (nothing of it is kept). Which of two problems the
        # message names can differ: pyarrow's streaming reader parses a block ahead of
        # the batch it hands over, so its malformed row may come before the invalid
        # value of the batch before (or a count that includes it).
        return
    assert typed == text


_CELLS = st.sampled_from(["1", "x", "", '"q"', '"a\nb"', '"\n\n"', '"say ""hi""\n"', '"#x"',
                          '"a\r\nb"', '"\n# c\n"'])


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.lists(_CELLS, min_size=4, max_size=4),  # a record
                          st.lists(_CELLS, min_size=2, max_size=3),  # a ragged one
                          st.sampled_from(["", "# note"])), max_size=25),
       st.integers(1, 30), st.sampled_from([256, 1 << 20]),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_skipped_rows_name_the_line_they_start_on(
        items: list[Any], chunk: int, block: int, end: str, comment: bool) -> None:
    # Each ragged row's line is known from how the text was put together: the lines of
    # the items before it, quoted newlines included.
    text, line, expected = "id,v,ok,s" + end, 2, []
    for item in items:
        if isinstance(item, str):
            if item and not comment:
                continue  # "# note" is a row of one field without a comment marker
            text += item + end
            line += 1
            continue
        row = ",".join(cell.replace("\n", end) if end == "\n" or "\r" not in cell
                       else cell for cell in item)
        if len(item) != 4:
            expected.append(line)
        text += row + end
        line += row.count("\n") + 1
    parser: dict[str, Any] = {"max_error_count": 100, "newlines_in_values": True}
    if comment:
        parser["comment"] = "#"
    with blocks_of(block):
        got = run(text.encode(), chunk, parser=parser, on_invalid="skip",
                  require_no_missing_fields=False)
    assert got[0] != "error", got
    assert [r["line"] for r in got[2] if r["line"] is not None] == expected
