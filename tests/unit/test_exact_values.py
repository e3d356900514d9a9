"""Values that a parser's number or date handling could change unseen: each is kept
exactly, or rejected (or the fragment fails) naming its row, column and value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest

from tests.helpers.rows import read
from worker.runtime.formats import ParseError
from worker.runtime.formats import json as json_format

JSON = {"format": "json"}
BIG = "12345678901234567890"  # past int64, and past 2^53


def json_rows(shape: str, *rows: str) -> bytes:
    """The same rows as JSON Lines (pyarrow's reader) or a JSON array (json.loads)."""
    if shape == "lines":
        return "".join(r + "\n" for r in rows).encode()
    return ("[" + ",".join(rows) + "]").encode()


SHAPES = pytest.mark.parametrize("shape", ["lines", "array"])


@SHAPES
@pytest.mark.parametrize(("declared", "kept"), [
    ("decimal(38,0)", Decimal(BIG)), ("string", BIG)])
def test_an_integer_past_int64_keeps_its_digits(shape: str, declared: str, kept: Any) -> None:
    out, log = read(json_rows(shape, f'{{"a": {BIG}}}', '{"a": 7}'),
                    [{"name": "a", "type": declared}], parser=JSON)
    assert out == [{"a": kept}, {"a": Decimal(7) if declared != "string" else "7"}]
    assert log.rejected == 0


@SHAPES
def test_an_integer_past_int64_is_rejected_naming_it_in_an_int64_column(shape: str) -> None:
    out, log = read(json_rows(shape, '{"a": 1}', f'{{"a": {BIG}}}'),
                    [{"name": "a", "type": "int64"}], parser=JSON, on_invalid="skip",
                    max_errors=5)
    assert out == [{"a": 1}]
    [rec] = log.records
    assert (rec.row, rec.column, rec.value) == (2, "a", BIG)
    assert rec.detail == f"integer {BIG} is out of range for int64"


@SHAPES
def test_an_integer_past_int64_without_a_declared_type_fails_naming_it(shape: str) -> None:
    with pytest.raises(ParseError, match=rf"column 'a' row 2: int {BIG} cannot be stored"):
        read(json_rows(shape, '{"a": 1}', f'{{"a": {BIG}}}'), parser=JSON)


@SHAPES
@pytest.mark.parametrize(("declared", "kept"), [
    ("int64", [9007199254740993, None]),
    ("decimal(38,1)", [Decimal("9007199254740993.0"), Decimal("1.5")]),
    ("string", ["9007199254740993", "1.5"])])
def test_an_integer_past_2_53_beside_floats_is_not_rounded(shape: str, declared: str,
                                                           kept: list[Any]) -> None:
    out, log = read(json_rows(shape, '{"a": 9007199254740993}', '{"a": 1.5}'),
                    [{"name": "a", "type": declared}], parser=JSON, on_invalid="default",
                    max_errors=5)
    assert [r["a"] for r in out] == kept


@SHAPES
def test_an_integer_past_2_53_beside_floats_without_a_declared_type_fails(shape: str) -> None:
    with pytest.raises(ParseError, match=r"column 'a'.*9007199254740993"):
        read(json_rows(shape, '{"a": 9007199254740993}', '{"a": 1.5}'), parser=JSON)


@SHAPES
@pytest.mark.parametrize(("text", "declared", "kept"), [
    ("0.1", "decimal(38,18)", Decimal("0.1")),
    ("0.123456789012345678", "decimal(38,18)", Decimal("0.123456789012345678")),
    ("0.123456789012345678901", "decimal(38,21)", Decimal("0.123456789012345678901")),
    ("123.45", "decimal(10,2)", Decimal("123.45")),
])
def test_a_json_number_into_a_decimal_column_keeps_its_digits(shape: str, text: str,
                                                              declared: str,
                                                              kept: Decimal) -> None:
    out, _ = read(json_rows(shape, f'{{"a": {text}}}'), [{"name": "a", "type": declared}],
                  parser=JSON)
    assert out == [{"a": kept}]


@SHAPES
@pytest.mark.parametrize(("text", "declared"), [
    ("123.456", "decimal(10,2)"), ("0.123456789012345678901", "decimal(38,18)")])
def test_a_json_number_a_decimal_column_would_round_is_rejected(shape: str, text: str,
                                                                declared: str) -> None:
    out, log = read(json_rows(shape, f'{{"a": {text}}}', '{"a": 1}'),
                    [{"name": "a", "type": declared}], parser=JSON, on_invalid="skip",
                    max_errors=5)
    assert out == [{"a": Decimal(1)}]
    [rec] = log.records
    assert (rec.row, rec.column, rec.reason) == (1, "a", "cannot convert")


def test_python_floats_into_a_decimal_column_are_their_shortest_text_never_rounded() -> None:
    def rows(reader: Any, on_next: Any) -> None:
        for v in (0.1, 123.456, 2.5):
            on_next({"a": v})

    out, log = read(b"x", [{"name": "a", "type": "decimal(10,2)"}],
                    parser={"format": "custom"}, custom=rows, on_invalid="skip", max_errors=5)
    assert out == [{"a": Decimal("0.10")}, {"a": Decimal("2.50")}]
    [rec] = log.records
    assert (rec.row, rec.value) == (2, "123.456")


@SHAPES
def test_a_number_other_than_0_or_1_into_a_bool_column_is_rejected(shape: str) -> None:
    out, log = read(json_rows(shape, '{"b": 1}', '{"b": 2}', '{"b": 0}', '{"b": 0.5}'),
                    [{"name": "b", "type": "bool"}], parser=JSON, on_invalid="skip",
                    max_errors=5)
    assert out == [{"b": True}, {"b": False}]
    # the column is float64 (0.5 is in it): 2 is shown as the float it was read as
    assert [(r.row, r.value) for r in log.records] == [(2, "2.0"), (4, "0.5")]
    assert "not a bool" in log.records[0].detail


@SHAPES
@pytest.mark.parametrize("text", ["2024-01-01T00:00:00+02:00", "2024-01-01",
                                  "2024-01-01 10:00:00"])
def test_json_strings_stay_text_unless_a_type_is_declared(shape: str, text: str) -> None:
    row = f'{{"t": "{text}", "n": {{"t": "{text}"}}}}'
    out, _ = read(json_rows(shape, row), parser=JSON)
    assert out == [{"t": text, "n": {"t": text}}]
    out, _ = read(json_rows(shape, row), [{"name": "t"}, {"name": "n.t"}],
                  parser={**JSON, "flatten": True})
    assert out == [{"t": text, "n.t": text}]


@SHAPES
def test_json_timestamps_with_an_offset_are_the_same_instant_in_a_timestamp_column(
        shape: str) -> None:
    out, _ = read(json_rows(shape, '{"t": "2024-01-01T00:00:00+02:00"}',
                            '{"t": "2024-01-01T00:00:00"}'),
                  [{"name": "t", "type": "timestamp"}], parser=JSON)
    utc = dt.UTC
    assert [r["t"].astimezone(utc) for r in out] == [
        dt.datetime(2023, 12, 31, 22, tzinfo=utc), dt.datetime(2024, 1, 1, tzinfo=utc)]


def test_json_strings_in_lists_stay_text_and_columns_keep_their_order() -> None:
    rows = ['{"id": 1, "when": ["2024-01-01"], "t": "2024-01-02", "n": {"u": "2024-01-03"}}',
            '{"id": 2, "when": [], "t": "x", "n": {"u": "2024-01-04", "v": 5}}']
    data = json_rows("lines", *rows) * 3000  # blocks after the first, too
    out, _ = read(data, parser=JSON, chunk=1 << 16)
    assert out[:2] == [
        {"id": 1, "when": ["2024-01-01"], "t": "2024-01-02", "n": {"u": "2024-01-03", "v": None}},
        {"id": 2, "when": [], "t": "x", "n": {"u": "2024-01-04", "v": 5}}]
    assert list(out[-1]) == ["id", "when", "t", "n"]


def test_csv_integer_past_int32_is_named_out_of_range() -> None:
    out, log = read(b"a\n1\n2147483648\n", [{"name": "a", "type": "int32"}],
                    on_invalid="skip", max_errors=5)
    assert out == [{"a": 1}]
    assert [(r.row, r.value, r.detail) for r in log.records] == [
        (2, "2147483648", "integer 2147483648 is out of range for int32")]


def test_large_floats_written_as_floats_stay_on_pyarrows_reader() -> None:
    with mock.patch.object(json_format, "_json_lines_slow",
                           side_effect=AssertionError("read line by line")):
        out, _ = read(b'{"a": 1e20}\n{"a": 2.5e300}\n', parser=JSON)
    assert out == [{"a": 1e20}, {"a": 2.5e300}]
