"""What the parsers and conformance do to a user's rows: nothing lost or altered unseen."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tests.helpers.rows import read
from worker.runtime.conform import DataError
from worker.runtime.formats import ParseError
from worker.spec import ParserSpec, Schema

# --------------------------------------------------------------------------- json


def test_json_values_changing_type_are_cast_to_the_declared_type() -> None:
    out, _ = read(b'{"id": "1", "v": 1}\n{"id": 2, "v": "x"}\n',
                  [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}],
                  parser={"format": "json"})
    assert out == [{"id": 1, "v": "1"}, {"id": 2, "v": "x"}]


def test_json_duplicate_keys_last_wins() -> None:
    out, _ = read(b'{"a": 1, "a": 2}\n{"a": 3}\n', parser={"format": "json"})
    assert out == [{"a": 2}, {"a": 3}]


PRELUDE = ("from worker.runtime.formats import parse\n"
           "from worker.runtime.stream import ChunkStream\n"
           "from worker.spec import ParserSpec\n")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter: for failures that take the whole process down."""
    return subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True,
                          text=True, timeout=120)


def test_json_null_first_line_is_a_data_error_not_a_crash() -> None:
    # pyarrow's JSON reader segfaults on this input: the parser must never hand it over
    r = run_python("try:\n list(parse(ChunkStream([b'null\\n{\"a\": 1}\\n']), "
                   "ParserSpec(format='json')))\n"
                   "except Exception as e: print(type(e).__name__, e)\n")
    assert r.returncode == 0, r.stderr
    assert "ParseError json: line 1: expected an object, got null" in r.stdout


def test_json_empty_object_rows_are_counted_as_written() -> None:
    out, log = read(b"{}\n{}\n", [{"name": "a", "type": "int64"}], parser={"format": "json"},
                    require_no_missing_fields=False)
    assert out == [{"a": None}, {"a": None}]
    assert log.read == 2 and log.written == 2
    for data in (b"{}\n", b"[{}]"):
        out, log = read(data, parser={"format": "json"})
        assert out == [] and log.read == 1 and log.rejected == 1
        assert log.records[0].reason == "row has no fields"


# --------------------------------------------------------------------------- defaults


def test_integer_default_on_decimal_column() -> None:
    out, _ = read(b"p\n1.5\n\n2\n", [{"name": "p", "type": "decimal(10,2)", "default": 0}])
    assert [r["p"] for r in out] == [pa.scalar(1.5).cast(pa.decimal128(10, 2)).as_py(),
                                     2]
    assert str(out[1]["p"]) == "2.00"


def test_integer_input_into_decimal_column() -> None:
    out, _ = read(b'{"p": 5}\n{"p": 7}\n', [{"name": "p", "type": "decimal(10,2)"}],
                  parser={"format": "json"})
    assert [str(r["p"]) for r in out] == ["5.00", "7.00"]


def test_default_that_cannot_be_converted_is_a_spec_error() -> None:
    with pytest.raises(ValidationError, match="default 'abc' cannot be converted to int64"):
        Schema.model_validate({"columns": [{"name": "n", "type": "int64", "default": "abc"}]})
    Schema.model_validate({"columns": [{"name": "n", "type": "decimal(10,2)", "default": 0}]})


# --------------------------------------------------------------------------- avro


AVRO = {"type": "record", "name": "r", "fields": [
    {"name": "id", "type": "long"},
    {"name": "v", "type": ["null", "string", "int"]},
    {"name": "nested", "type": {"type": "record", "name": "n", "fields": [
        {"name": "x", "type": ["string", "long"]}]}},
]}


def avro_bytes(records: list[dict[str, Any]], codec: str = "null") -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, AVRO, records, codec=codec)
    return buf.getvalue()


@pytest.mark.parametrize("codec", ["snappy", "zstandard", "deflate"])
def test_avro_common_codecs(codec: str) -> None:
    data = avro_bytes([{"id": 1, "v": "a", "nested": {"x": "p"}}], codec)
    out, _ = read(data, parser={"format": "avro"}, chunk=100)
    assert out[0]["id"] == 1


def test_avro_multi_branch_union_is_text() -> None:
    data = avro_bytes([{"id": 1, "v": "a", "nested": {"x": "p"}},
                       {"id": 2, "v": 7, "nested": {"x": 9}},
                       {"id": 3, "v": None, "nested": {"x": "q"}}])
    out, _ = read(data, parser={"format": "avro"}, chunk=100)
    assert [r["v"] for r in out] == ["a", "7", None]
    assert [r["nested"]["x"] for r in out] == ["p", "9", "q"]
    typed, _ = read(data, [{"name": "v", "type": "int64"}], parser={"format": "avro"},
                    on_invalid="default", max_errors=5)
    assert [r["v"] for r in typed] == [None, 7, None]


# --------------------------------------------------------------------------- parquet


def test_parquet_int96_far_future_read_as_microseconds() -> None:
    far = dt.datetime(3000, 1, 2, 3, 4, 5)
    sink = io.BytesIO()
    pq.write_table(pa.table({"t": pa.array([far], pa.timestamp("us"))}), sink,
                   use_deprecated_int96_timestamps=True)
    out, _ = read(sink.getvalue(), parser={"format": "parquet"}, chunk=1000)
    assert out == [{"t": far}]


# --------------------------------------------------------------------------- xsv


def test_ragged_row_names_its_line() -> None:
    # the file's own line numbers: empty, comment and skipped header lines count
    with pytest.raises(ParseError, match=r"xsv: line 4 \(row 2\): expected 2 fields, got 3"):
        read(b"a,b\n1,2\n\n3,4,5\n")
    data = b"title\n\na,b\n# c\n1,2\n\n\n# c\n3,4,5\n"
    for chunk in (1, 4, 100):
        with pytest.raises(ParseError, match=r"xsv: line 9 \(row 2\): expected 2 fields, got 3"):
            read(data, chunk=chunk, parser={"header_line_count": 1, "comment": "#"})


def test_ragged_rows_skipped_and_recorded_under_on_invalid_skip() -> None:
    out, log = read(b"a,b\n1,2\n3\n4,5,6\n7,8\n", [{"name": "a"}, {"name": "b"}],
                    on_invalid="skip", max_errors=5)
    assert out == [{"a": "1", "b": "2"}, {"a": "7", "b": "8"}]
    assert log.rejected == 2 and log.read == 4 and log.written == 2
    assert [(r.line, r.value, r.reason) for r in log.records] == [
        (3, "3", "malformed row"), (4, "4,5,6", "malformed row")]


# --------------------------------------------------------------------------- counts


def test_skip_and_default_are_counted_and_recorded() -> None:
    out, log = read(b"id,amount\n1,4.005\nx,2\n3,1.25\n",
                    [{"name": "id", "type": "int64", "nullable": False},
                     {"name": "amount", "type": "decimal(10,2)", "default": 0}],
                    on_invalid="default", max_errors=5)
    assert out == [{"id": 1, "amount": 0}, {"id": 3, "amount": pa.scalar(1.25).cast(
        pa.decimal128(10, 2)).as_py()}]
    assert (log.read, log.written, log.rejected, log.defaulted) == (3, 2, 1, 1)
    got = {(r.row, r.column, r.value, r.action) for r in log.records}
    # `row` counts data rows (the header is not one)
    assert got == {(1, "amount", "4.005", "defaulted"), (2, "id", "x", "rejected")}


def test_missing_declared_column_is_an_error_by_default() -> None:
    with pytest.raises(DataError, match=r"column 'amout' .*not in the data"):
        read(b"id,amount\n1,2\n", [{"name": "id"}, {"name": "amout"}])
    out, log = read(b"id,amount\n1,2\n", [{"name": "id"}, {"name": "amout"}],
                    require_no_missing_fields=False)
    assert out == [{"id": "1", "amout": None}]
    assert any("'amout'" in w and "not in the data" in w for w in log.warnings)


# --------------------------------------------------------------------------- options


def test_header_line_count_skips_lines_before_the_header() -> None:
    out, _ = read(b"exported 2024-01-01\nby: system\na,b\n1,2\n",
                  parser={"header_line_count": 2})
    assert out == [{"a": "1", "b": "2"}]


def test_comment_prefix_of_several_characters() -> None:
    out, _ = read(b"a,b\n-- note\n1,2\n-3,4\n", parser={"comment_prefix": "--"})
    assert out == [{"a": "1", "b": "2"}, {"a": "-3", "b": "4"}]
    with pytest.raises(ValidationError, match="not both"):
        ParserSpec(comment="#", comment_prefix="//")


def test_max_error_count_allows_that_many_rejected_rows() -> None:
    data = b"a,b\n1,2\n3\n4\n5,6\n"
    out, log = read(data, parser={"max_error_count": 2})
    assert out == [{"a": "1", "b": "2"}, {"a": "5", "b": "6"}] and log.rejected == 2
    with pytest.raises(DataError, match=r"2 invalid row\(s\) exceed max_error_count=1"):
        read(data, parser={"max_error_count": 1})


def test_max_error_percentage_checked_over_the_fragment() -> None:
    data = b"n\n1\nx\n3\n4\n"  # one bad row of four: 25%
    cols = [{"name": "n", "type": "int64"}]
    out, _ = read(data, cols, parser={"max_error_percentage": 30}, on_invalid="skip",
                  max_errors=100)
    assert [r["n"] for r in out] == [1, 3, 4]
    with pytest.raises(DataError, match=r"1 of 4 row\(s\) invalid \(25.0%\) exceed "
                                        r"max_error_percentage=20"):
        read(data, cols, parser={"max_error_percentage": 20}, on_invalid="skip",
             max_errors=100)


def test_max_error_percentage_alone_allows_rows_up_to_it() -> None:
    # without max_error_count, schema.max_errors (default 0) does not stop it first
    out, log = read(b"n\n1\nx\n3\n4\n", [{"name": "n", "type": "int64"}],
                    parser={"max_error_percentage": 30}, on_invalid="skip")
    assert [r["n"] for r in out] == [1, 3, 4] and log.rejected == 1


def test_require_no_extra_fields() -> None:
    read(b"a,b\n1,2\n", [{"name": "a"}])  # off by default: b is dropped
    with pytest.raises(DataError, match=r"column\(s\) 'b' in the data are not declared"):
        read(b"a,b\n1,2\n", [{"name": "a"}], require_no_extra_fields=True)


def test_require_field_type_match_schema() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"n": pa.array([1], pa.int32())}), sink)
    cols = [{"name": "n", "type": "int64"}]
    out, _ = read(sink.getvalue(), cols, parser={"format": "parquet"}, chunk=1000)
    assert out == [{"n": 1}]  # cast by default
    with pytest.raises(DataError, match=r"column 'n' is int32 in the data, declared int64"):
        read(sink.getvalue(), cols, parser={"format": "parquet"}, chunk=1000,
             require_field_type_match_schema=True)
    read(b"n\n1\n", cols, require_field_type_match_schema=True)  # text is always cast


# --------------------------------------------------------------------------- messages


def test_validation_error_names_the_column(tmp_path) -> None:
    from worker.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match=r"schema\.columns\[amount\]\.nulable: unknown field "
                                        r"\(did you mean 'nullable'\?\)"):
        parse_spec(tmp_path / "connector.yaml",
                   "name: x\nschema:\n  - {name: id}\n  - {name: amount, nulable: false}\n")
    with pytest.raises(SpecError, match=r"schema\.columns\[p\]: default 0.5 cannot be "
                                        r"converted to int64"):
        parse_spec(tmp_path / "connector.yaml",
                   "name: x\nschema:\n  columns:\n    - {name: p, type: int64, default: 0.5}\n")


def test_ragged_row_error_leaves_no_reader_behind_at_exit() -> None:
    # pyarrow keeps the row handler in a reader still reading ahead; left to interpreter
    # exit it aborts the process ("Fatal Python error"), which the host would blame on
    # the connector. The error must be the data error, and the exit clean.
    r = run_python(
        "rows = [b'%d,n%d,%d.25,2026-01-01\\n' % (i, i, i) for i in range(400000)]\n"
        "rows[200000] = b'short\\n'\n"  # mid-file: the reader is still reading ahead
        "data = b'id,name,amount,when\\n' + b''.join(rows)\n"
        "chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]\n"
        "list(parse(ChunkStream(chunks), ParserSpec()))\n")
    assert "ParseError: xsv: line 200002" in r.stderr, r.stderr[-2000:]
    assert "Fatal Python error" not in r.stderr and r.returncode == 1, r.stderr[-2000:]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_ragged_rows_name_their_lines_past_empty_lines_at_any_chunk_boundary(
        ending: bytes) -> None:
    # no comment option: empty lines (and "\r" ones) still count in the file's numbering,
    # wherever the chunks of read_bytes split them
    lines = [b"title", b"", b"a,b", b"1,2", b"", b"", b"3,4,5", b"6,7", b"", b"8", b"9,10"]
    data = ending.join(lines) + ending
    for chunk in range(1, len(data) + 1):
        out, log = read(data, [{"name": "a"}, {"name": "b"}], chunk=chunk,
                        parser={"header_line_count": 1}, on_invalid="skip", max_errors=5)
        assert out == [{"a": "1", "b": "2"}, {"a": "6", "b": "7"}, {"a": "9", "b": "10"}]
        assert [(r.line, r.value) for r in log.records] == [(7, "3,4,5"), (10, "8")], chunk
        assert (log.read, log.written, log.rejected) == (5, 3, 2)
