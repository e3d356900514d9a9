"""Schema conformance (worker.runtime.conform)."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from worker.runtime.conform import Conformer, DataError
from worker.runtime.convert import output_schema
from worker.runtime.formats import parse
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec, Schema

UTC = dt.UTC


def schema(columns: list[dict[str, Any]], **kw: Any) -> Schema:
    return Schema.model_validate({"columns": columns, **kw})


def batch(**cols: list[Any]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(cols)


def test_no_columns_passes_batches_through() -> None:
    b = batch(a=["1"], b=[2])
    c = Conformer(Schema(), "f")
    assert c.conform(b) is b
    assert c.rejected == 0


def test_casts_order_names_and_types() -> None:
    s = schema([
        {"name": "id", "type": "int64"},
        {"name": "small", "type": "int32"},
        {"name": "x", "type": "float64"},
        {"name": "y", "type": "float32"},
        {"name": "ok", "type": "bool"},
        {"name": "raw", "type": "binary"},
        {"name": "name"},
    ])
    b = batch(name=["a", None], ok=["true", "0"], id=["1", " 2 "], small=["3", None],
              x=["1.5", "1e3"], y=["2", "-1"], raw=["hi", "yo"], extra=["z", "z"])
    out = Conformer(s, "f").conform(b)
    assert out.schema == output_schema(s)
    assert out.schema.names == ["id", "small", "x", "y", "ok", "raw", "name"]
    assert out.schema.types == [pa.int64(), pa.int32(), pa.float64(), pa.float32(),
                                pa.bool_(), pa.binary(), pa.string()]
    assert out.to_pylist() == [
        {"id": 1, "small": 3, "x": 1.5, "y": 2.0, "ok": True, "raw": b"hi", "name": "a"},
        {"id": 2, "small": None, "x": 1000.0, "y": -1.0, "ok": False, "raw": b"yo",
         "name": None},
    ]


def test_source_rename_missing_column_and_defaults() -> None:
    s = schema([
        {"name": "amount", "type": "int64", "source": "AMT", "default": 0},
        {"name": "country", "default": "NL"},
        {"name": "note"},
    ])
    out = Conformer(s, "f").conform(batch(AMT=["5", None]))
    assert out.to_pylist() == [
        {"amount": 5, "country": "NL", "note": None},
        {"amount": 0, "country": "NL", "note": None},
    ]


def test_decimal_exact() -> None:
    s = schema([{"name": "p", "type": "decimal(10, 2)"}])
    out = Conformer(s, "f").conform(batch(p=["1.5", "-3", "12345678.99"]))
    assert out.schema.field("p").type == pa.decimal128(10, 2)
    assert out.column(0).to_pylist() == [Decimal("1.50"), Decimal("-3.00"),
                                         Decimal("12345678.99")]
    with pytest.raises(DataError, match=r"row 1 column 'p' \(decimal\(10,2\)\): "
                                        r"cannot convert '1.234'"):
        Conformer(s, "f").conform(batch(p=["1.234"]))


def test_date_and_timestamp_iso_and_format() -> None:
    s = schema([
        {"name": "d", "type": "date"},
        {"name": "d2", "type": "date", "format": "%d/%m/%Y"},
        {"name": "t", "type": "timestamp"},
        {"name": "t2", "type": "timestamp", "format": "%d.%m.%Y %H:%M"},
    ])
    out = Conformer(s, "f").conform(batch(
        d=["2024-01-31", "2024-02-01T10:00:00"],
        d2=["31/01/2024", None],
        t=["2024-01-31T10:00:00", "2024-01-31 10:00:00.5"],
        t2=["31.01.2024 10:30", "01.02.2024 00:00"],
    ))
    assert out.schema.field("t").type == pa.timestamp("us", tz="UTC")
    assert out.to_pylist() == [
        {"d": dt.date(2024, 1, 31), "d2": dt.date(2024, 1, 31),
         "t": dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
         "t2": dt.datetime(2024, 1, 31, 10, 30, tzinfo=UTC)},
        {"d": dt.date(2024, 2, 1), "d2": None,
         "t": dt.datetime(2024, 1, 31, 10, 0, 0, 500000, tzinfo=UTC),
         "t2": dt.datetime(2024, 2, 1, tzinfo=UTC)},
    ]


def test_timestamp_offsets_converted_to_utc_naive_taken_as_utc() -> None:
    s = schema([{"name": "t", "type": "timestamp"}])
    out = Conformer(s, "f").conform(batch(
        t=["2024-01-31T10:00:00+02:00", "2024-01-31T10:00:00", "2024-01-31T10:00:00Z"]))
    assert out.column(0).to_pylist() == [
        dt.datetime(2024, 1, 31, 8, tzinfo=UTC),
        dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
        dt.datetime(2024, 1, 31, 10, tzinfo=UTC),
    ]
    # already-typed inputs: naive labelled UTC, other zones converted
    naive = pa.array([dt.datetime(2024, 1, 1, 12)], pa.timestamp("ns"))
    paris = pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=UTC)], pa.timestamp("s", "Europe/Paris"))
    for arr in (naive, paris):
        got = Conformer(s, "f").conform(pa.RecordBatch.from_arrays([arr], names=["t"]))
        assert got.column(0).to_pylist() == [dt.datetime(2024, 1, 1, 12, tzinfo=UTC)]


def test_json_column_serializes_structs_and_validates_strings() -> None:
    s = schema([{"name": "j", "type": "json"}])
    structs = pa.RecordBatch.from_pydict({"j": [{"a": 1, "b": [1, 2]}, None]})
    out = Conformer(s, "f").conform(structs)
    assert out.column(0).to_pylist() == ['{"a":1,"b":[1,2]}', None]
    out = Conformer(s, "f").conform(batch(j=['{"x": 1}', "[1]"]))
    assert out.column(0).to_pylist() == ['{"x": 1}', "[1]"]
    with pytest.raises(DataError, match=r"row 2 column 'j' \(json\): cannot convert '\{bad'"):
        Conformer(s, "f").conform(batch(j=['{"x": 1}', "{bad"]))


def test_string_column_from_nested_input_is_json_text() -> None:
    s = schema([{"name": "tags"}])
    out = Conformer(s, "f").conform(pa.RecordBatch.from_pydict({"tags": [["a", "b"]]}))
    assert out.column(0).to_pylist() == ['["a","b"]']


def test_fail_names_fragment_row_column_value_across_batches() -> None:
    s = schema([{"name": "id", "type": "int64"}, {"name": "amount", "type": "int64"}])
    c = Conformer(s, "a.csv")
    c.conform(batch(id=[str(i) for i in range(10)], amount=["1"] * 10))
    with pytest.raises(DataError) as info:
        c.conform(batch(id=["1"] * 10, amount=["1"] * 6 + ["abc"] + ["x"] * 3))
    assert str(info.value).startswith(
        "fragment 'a.csv' row 17 column 'amount' (int64): cannot convert 'abc'")


def test_fail_reports_lowest_row_across_columns() -> None:
    s = schema([{"name": "a", "type": "int64"}, {"name": "b", "type": "int64"}])
    with pytest.raises(DataError, match=r"row 2 column 'b' .*'y'"):
        Conformer(s, "f").conform(batch(a=["1", "2", "x"], b=["1", "y", "3"]))


def test_non_nullable_null_without_default_is_invalid() -> None:
    s = schema([{"name": "id", "type": "int64", "nullable": False}])
    with pytest.raises(DataError, match=r"row 2 column 'id' \(int64\): null"):
        Conformer(s, "f").conform(batch(id=["1", None]))
    out_schema = output_schema(s)
    assert out_schema is not None and not out_schema.field("id").nullable
    filled = schema([{"name": "id", "type": "int64", "nullable": False, "default": -1}])
    assert Conformer(filled, "f").conform(batch(id=["1", None])).column(0).to_pylist() == [1, -1]


def test_skip_drops_rows_and_counts() -> None:
    s = schema([{"name": "id", "type": "int64"}, {"name": "v", "type": "float64"}],
               on_invalid="skip", max_errors=10)
    c = Conformer(s, "f")
    out = c.conform(batch(id=["1", "x", "3", "4"], v=["1.0", "2", "bad", "4"]))
    assert out.to_pylist() == [{"id": 1, "v": 1.0}, {"id": 4, "v": 4.0}]
    assert c.rejected == 2
    assert any("row 2 column 'id'" in w and "'x'" in w for w in c.warnings)
    assert any("row 3 column 'v'" in w and "'bad'" in w for w in c.warnings)


def test_default_mode_replaces_invalid_values() -> None:
    s = schema([{"name": "id", "type": "int64", "default": 0},
                {"name": "tag", "type": "int32"}],
               on_invalid="default", max_errors=5)
    c = Conformer(s, "f")
    out = c.conform(batch(id=["1", "x", None], tag=["y", "2", "3"]))
    assert out.to_pylist() == [{"id": 1, "tag": None}, {"id": 0, "tag": 2},
                               {"id": 0, "tag": 3}]
    # no row was dropped; two values took the default (the plain null is not invalid)
    assert (c.rejected, c.defaulted) == (0, 2)


def test_column_on_invalid_overrides_schema() -> None:
    s = schema([{"name": "id", "type": "int64", "on_invalid": "skip"},
                {"name": "v", "type": "int64"}], max_errors=3)
    c = Conformer(s, "f")
    assert c.conform(batch(id=["x", "2"], v=["1", "2"])).to_pylist() == [{"id": 2, "v": 2}]
    with pytest.raises(DataError, match=r"row 4 column 'v' \(int64\): cannot convert 'z'"):
        c.conform(batch(id=["1", "2"], v=["1", "z"]))


def test_max_errors_exceeded_raises_across_batches() -> None:
    s = schema([{"name": "id", "type": "int64"}], on_invalid="skip", max_errors=2)
    c = Conformer(s, "f.csv")
    c.conform(batch(id=["1", "a"]))
    c.conform(batch(id=["b", "2"]))
    assert c.rejected == 2
    with pytest.raises(DataError, match=r"fragment 'f.csv': 3 invalid row\(s\) exceed "
                                        r"max_errors=2; last: .*row 6 column 'id'.*'c'"):
        c.conform(batch(id=["3", "c"]))


def test_bad_default_is_error_at_construction() -> None:
    with pytest.raises(ValidationError, match="default 'abc' cannot be converted"):
        schema([{"name": "n", "type": "int64", "default": "abc"}])


def test_many_bad_values_found_by_bisection() -> None:
    n = 10_000
    values = [str(i) for i in range(n)]
    bad = {17, 4000, 9999}
    for i in bad:
        values[i] = f"bad{i}"
    s = schema([{"name": "v", "type": "int64"}], on_invalid="skip", max_errors=100)
    c = Conformer(s, "f")
    out = c.conform(batch(v=values))
    assert out.num_rows == n - len(bad)
    assert c.rejected == 3
    assert [w.split(" column")[0] for w in c.warnings] == [
        "fragment 'f' row 18", "fragment 'f' row 4001", "fragment 'f' row 10000"]


def test_parse_and_conform_100k_rows_is_fast() -> None:
    lines = ["id,name,amount,price,flag,day,ts,qty"]
    for i in range(100_000):
        lines.append(f"{i},n{i},{i * 1.5},{i % 1000}.25,{'true' if i % 2 else 'false'},"
                     f"2024-01-{i % 28 + 1:02d},2024-01-02T03:04:{i % 60:02d},{i % 7}")
    data = ("\n".join(lines) + "\n").encode()
    s = schema([
        {"name": "id", "type": "int64"}, {"name": "name"},
        {"name": "amount", "type": "float64"}, {"name": "price", "type": "decimal(12,2)"},
        {"name": "flag", "type": "bool"}, {"name": "day", "type": "date"},
        {"name": "ts", "type": "timestamp"}, {"name": "qty", "type": "int32"},
    ])
    c = Conformer(s, "big.csv")
    spent = 0.0
    rows = 0
    chunks = (data[i:i + 65536] for i in range(0, len(data), 65536))
    for b in parse(ChunkStream(chunks), ParserSpec()):
        t0 = time.perf_counter()
        out = c.conform(b)
        spent += time.perf_counter() - t0
        rows += out.num_rows
    assert rows == 100_000
    assert spent < 0.5, f"conform took {spent * 1000:.0f} ms"  # ~20 ms on a dev box
