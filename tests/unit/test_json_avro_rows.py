"""JSON and Avro rows as a user sees them: the same rules as custom-parser rows.

Under declared columns a field whose values are of several types reaches conformance as
text, so only the values that do not convert are rejected or defaulted, each named by
row and column; without declared columns the fragment fails naming the column, both
types and their rows. A value Arrow cannot hold is named by column and row. Avro
`uuid` values are stored as their canonical text, as custom-parser UUIDs are.
"""

from __future__ import annotations

import decimal
import io
import json
import uuid
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from tests.unit.test_fidelity import read
from worker.runtime.conform import DataError
from worker.runtime.formats import ParseError, parse
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec

LIST_ONE = """
import pathlib
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
"""
JSON = {"format": "json"}
QTY = [{"name": "id", "type": "int64"}, {"name": "qty", "type": "int64"}]
MIXED = [{"id": 1, "qty": 1}, {"id": 2, "qty": "bad"}, {"id": 3, "qty": " 3 "},
         {"id": 4, "qty": None}]


def lines(objs: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def array(objs: list[dict[str, Any]]) -> bytes:
    return json.dumps(objs).encode()


SHAPES = pytest.mark.parametrize("shape", [lines, array], ids=["lines", "array"])


# --------------------------------------------------------------------------- json


@SHAPES
def test_json_value_of_another_type_in_a_declared_column_is_rejected_alone(shape) -> None:
    out, log = read(shape(MIXED), QTY, parser=JSON, on_invalid="skip", max_errors=5)
    assert [(r["id"], r["qty"]) for r in out] == [(1, 1), (3, 3), (4, None)]
    assert [(r.row, r.column, r.value) for r in log.records] == [(2, "qty", "bad")]


@SHAPES
def test_json_value_of_another_type_is_defaulted_or_fails_per_policy(shape) -> None:
    out, log = read(shape(MIXED), QTY, parser=JSON, on_invalid="default", max_errors=5)
    assert [r["qty"] for r in out] == [1, None, 3, None]
    assert log.defaulted == 1 and log.rejected == 0
    with pytest.raises(DataError, match=r"row 2 column 'qty' \(int64\): cannot convert 'bad'"):
        read(shape(MIXED), QTY, parser=JSON)


@SHAPES
def test_json_mixed_types_without_a_declared_type_name_the_column_rows_and_types(
        shape) -> None:
    with pytest.raises(ParseError, match=(
            r"^json: rows 1-4: column 'qty' holds int \(row 1\) and str \(row 2\); declare "
            r"its type under schema.columns")):
        read(shape(MIXED), parser=JSON)


@SHAPES
def test_json_mixed_types_are_numbered_by_their_row_in_the_fragment(shape) -> None:
    objs = [{"n": i} for i in range(1, 6)] + [{"n": "six"}]
    with pytest.raises(ParseError, match=r"column 'n' holds int \(row 5\) and str \(row 6\)"):
        list(parse(ChunkStream([shape(objs)]), ParserSpec(**JSON), batch_rows=4))


@SHAPES
def test_json_nested_values_of_several_types_are_text_for_a_declared_json_column(
        shape) -> None:
    objs = [{"v": {"a": 1}}, {"v": {"a": "x"}}, {"v": [1, "y"]}]
    out, _ = read(shape(objs), [{"name": "v", "type": "json"}], parser=JSON)
    assert [json.loads(r["v"]) for r in out] == [{"a": 1}, {"a": "x"}, [1, "y"]]


@SHAPES
def test_json_integer_arrow_cannot_hold_is_named_or_rejected(shape) -> None:
    objs = [{"v": 1}, {"v": 10**30}]
    out, log = read(shape(objs), [{"name": "v", "type": "int64"}], parser=JSON,
                    on_invalid="skip", max_errors=5)
    assert out == [{"v": 1}]
    assert [(r.row, r.column) for r in log.records] == [(2, "v")]
    if shape is array:  # JSON Lines go to pyarrow's reader, which reads it as a float
        with pytest.raises(ParseError, match=r"^json: rows 1-2: column 'v' row 2: int "):
            read(shape(objs), parser=JSON)


def test_json_mixed_types_fail_the_fragment_as_a_data_error(connector, cli) -> None:
    c = connector(LIST_ONE + f"""
def read_bytes(c, m):
    yield {lines(MIXED)!r}
""", "name: j\nparser: {format: json}\n", name="j")
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "failed (data)" in r.stderr, r.stderr
    assert "column 'qty' holds int (row 1) and str (row 2)" in r.stderr, r.stderr


# --------------------------------------------------------------------------- avro

READ_FILE = """
def read_bytes(c, m):
    yield (pathlib.Path(__file__).parent / "data.avro").read_bytes()
"""

AVRO = {"type": "record", "name": "r", "fields": [
    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "ref", "type": ["null", {"type": "string", "logicalType": "uuid"}]},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10,
                                "scale": 2}},
    {"name": "counts", "type": {"type": "map", "values": "long"}},
]}
UUID_ROWS = [
    {"id": uuid.UUID(int=1), "ref": None, "amount": decimal.Decimal("1.50"),
     "counts": {"a": 1}},
    {"id": uuid.UUID(int=2), "ref": uuid.UUID(int=3), "amount": decimal.Decimal("2.00"),
     "counts": {}},
]
TEXT = ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]


def avro(records: list[dict[str, Any]], schema: dict[str, Any] = AVRO) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, schema, records)
    return buf.getvalue()


@pytest.mark.parametrize("declared", [[], [{"name": "id", "type": "string"},
                                           {"name": "ref", "type": "string"}]])
def test_avro_uuids_are_their_canonical_text(declared) -> None:
    out, _ = read(avro(UUID_ROWS), declared, parser={"format": "avro"}, chunk=1000)
    assert [str(r["id"]) for r in out] == TEXT
    assert [r["ref"] and str(r["ref"]) for r in out] == [
        None, "00000000-0000-0000-0000-000000000003"]


def test_avro_uuid_column_is_a_string_column_and_the_others_keep_their_types() -> None:
    (batch,) = parse(ChunkStream([avro(UUID_ROWS)]), ParserSpec(format="avro"))
    assert batch.schema.field("id").type == pa.string()
    assert batch.schema.field("amount").type == pa.decimal128(10, 2)
    assert batch.schema.field("counts").type == pa.map_(pa.string(), pa.int64())
    assert batch.column("id").to_pylist() == TEXT
    assert [dict(m) for m in batch.column("counts").to_pylist()] == [{"a": 1}, {}]


def test_avro_uuids_are_stored_and_shown_as_text(connector, cli) -> None:
    c = connector(LIST_ONE + READ_FILE, "name: a\nparser: {format: avro}\n", name="a")
    (c / "data.avro").write_bytes(avro(UUID_ROWS))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["rows"] == 2, s
    assert [row["id"] for row in cli.rows(c)] == TEXT
    table = cli("show", str(c), env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert TEXT[0] in table.stdout, table.stdout
