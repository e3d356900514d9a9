"""Column conversion: one parsed column -> the declared type, and which values failed.

Runs inside the sandbox, on the hot path. Every column is converted with one
vectorized pyarrow cast; only when that cast fails does the slow path look for the
offending rows (by bisecting the column, so k bad rows cost O(k log n) casts).
What to do with a failed value is the caller's policy (see `conform`).

Conversion rules:
- timestamp -> `timestamp[us, tz=UTC]`, always: values with an offset (`Z`, `+02:00`,
  `%z`) are converted to UTC; values without one are taken to BE UTC. Input that is
  already a timestamp is converted likewise (naive -> labelled UTC).
- date/timestamp with `format` use strptime; otherwise ISO-8601. Strings to
  numbers/bool/date/timestamp/decimal are retried with surrounding whitespace trimmed.
- decimal casts are exact: a value that needs rounding ('1.234' into decimal(10,2)) is
  invalid. Integers convert to any decimal wide enough; a float converts as the
  shortest text that reads back as it (0.1 -> 0.1, never 0.100000000000000006).
- bool from numbers: 0 and 1 only (any other number is invalid, not true).
- json -> string holding JSON text: struct/list/map/number/bool inputs are serialized
  with json.dumps (dates/decimals via str); string inputs must already be valid JSON.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from worker.column_types import arrow_type
from worker.runtime.reasons import Invalid, RejectReason
from worker.spec import Column, Schema

ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError,
                OverflowError)
_UTC_US = pa.timestamp("us", tz="UTC")
_CAST_TS = pc.CastOptions(_UTC_US, allow_time_truncate=True)


def output_schema(schema: Schema) -> pa.Schema | None:
    """The Arrow schema conform() produces, or None when batches pass through."""
    if not schema.columns:
        return None
    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable)
                      for c in schema.columns])


# --------------------------------------------------------------------------- converters

Converter = Callable[[pa.Array], pa.Array]


def _is_stringy(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t)  # struct, list, map, union


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return str(v)


def _dumps(v: Any) -> str:
    return json.dumps(v, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _pylist_to_strings(arr: pa.Array) -> pa.Array:
    values = arr.to_pylist()
    if pa.types.is_map(arr.type):  # map values come back as lists of (key, value)
        values = [None if v is None else dict(v) for v in values]
    return pa.array([None if v is None else _dumps(v) for v in values], type=pa.string())


def _with_trim(cast: Converter) -> Converter:
    """Retry a failed string cast with surrounding whitespace trimmed."""

    def convert(arr: pa.Array) -> pa.Array:
        try:
            return cast(arr)
        except ARROW_ERRORS:
            if not _is_stringy(arr.type):
                raise
            return cast(pc.utf8_trim_whitespace(arr))

    return convert


def _to_utc(arr: pa.Array) -> pa.Array:
    """Any timestamp array -> timestamp[us, tz=UTC] (naive values are taken as UTC)."""
    if arr.type.tz is None:
        arr = pc.cast(arr, pa.timestamp("us"), safe=False) if arr.type.unit != "us" else arr
        return arr.cast(_UTC_US)  # naive -> UTC label: same instant numbers
    return pc.cast(arr, options=_CAST_TS)


def _ts_converter(fmt: str | None) -> Converter:
    def convert(arr: pa.Array) -> pa.Array:
        t = arr.type
        if pa.types.is_timestamp(t):
            return _to_utc(arr)
        if _is_stringy(t):
            if fmt is not None:
                return _to_utc(pc.strptime(arr, format=fmt, unit="us"))
            try:
                return _to_utc(pc.cast(arr, pa.timestamp("us")))
            except pa.ArrowInvalid as naive_error:
                # some values carry an offset: give the others 'Z', parse all as aware
                has_off = pc.match_substring_regex(arr, r"(Z|z|[+-]\d\d(:?\d\d)?)$")
                fixed = pc.if_else(has_off, arr, pc.binary_join_element_wise(arr, "Z", ""))
                try:
                    return pc.cast(fixed, options=_CAST_TS)
                except pa.ArrowInvalid:
                    raise naive_error from None
        if pa.types.is_date(t):
            return _to_utc(pc.cast(arr, pa.timestamp("us")))
        return _to_utc(pc.cast(arr, pa.timestamp("us")))

    return convert


def _date_converter(fmt: str | None) -> Converter:
    def convert(arr: pa.Array) -> pa.Array:
        t = arr.type
        if _is_stringy(t):
            if fmt is not None:
                ts = pc.strptime(arr, format=fmt, unit="s")
                return pc.cast(ts, pa.date32())
            try:
                return pc.cast(arr, pa.date32())
            except pa.ArrowInvalid as date_error:
                try:
                    ts = pc.cast(arr, pa.timestamp("us"))  # '2024-01-02T03:04:05'
                except pa.ArrowInvalid:
                    raise date_error from None  # the message names the type declared
                return pc.cast(ts, pa.date32())
        if pa.types.is_timestamp(t):
            return pc.cast(arr, options=pc.CastOptions(pa.date32(), allow_time_truncate=True))
        return pc.cast(arr, pa.date32())

    return convert


def _string_converter(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if _is_nested(t):
        return _pylist_to_strings(arr)
    if pa.types.is_dictionary(t):
        return pc.cast(pc.cast(arr, t.value_type), pa.string())
    return pc.cast(arr, pa.string())


class _BadJson(Exception):
    def __init__(self, bad: dict[int, Invalid]) -> None:
        super().__init__("invalid JSON")
        self.bad = bad


def _json_converter(arr: pa.Array) -> pa.Array:
    t = arr.type
    if _is_stringy(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = pc.cast(arr, pa.string()) if not pa.types.is_string(t) else arr
        bad: dict[int, Invalid] = {}
        loads = json.loads
        for i, v in enumerate(values.to_pylist()):
            if v is None:
                continue
            try:
                loads(v)
            except ValueError as e:
                bad[i] = Invalid(RejectReason.INVALID_JSON, str(e))
        if bad:
            raise _BadJson(bad)
        return values
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    return _pylist_to_strings(arr)


def _cast_to(target: pa.DataType) -> Converter:
    def convert(arr: pa.Array) -> pa.Array:
        if arr.type == target:
            return arr
        if pa.types.is_dictionary(arr.type):
            arr = pc.cast(arr, arr.type.value_type)
        src = arr.type
        if pa.types.is_decimal(target) and pa.types.is_integer(src):
            # pyarrow sizes an integer->decimal cast by the integer type (int64 needs
            # precision 19 + scale), not by the values: widen first, then check each value
            arr = pc.cast(arr, pa.decimal128(38, min(target.scale, 18)))
        elif ((pa.types.is_decimal(target) and pa.types.is_floating(src))
              or (pa.types.is_floating(target) and pa.types.is_decimal(src))):
            # pyarrow casts a float to a decimal by its binary value, rounded to the scale
            # (0.1 -> 0.100000000000000006, 123.456 -> 123.46 in decimal(10,2)): go by
            # the shortest text that reads back as the same float instead, whose digits
            # the text cast keeps or refuses. And a decimal to the nearest float.
            arr = pc.cast(arr, pa.string())
        elif pa.types.is_boolean(target) and (pa.types.is_integer(src)
                                              or pa.types.is_floating(src)):
            _zero_or_one(arr)
        return pc.cast(arr, target)

    return convert


def _zero_or_one(arr: pa.Array) -> None:
    """A number is a bool only as 0 or 1 (pyarrow's cast takes any non-zero as true)."""
    ok = pc.or_kleene(pc.equal(arr, 0), pc.equal(arr, 1))
    if pc.all(pc.or_kleene(ok, pc.is_null(arr))).as_py():
        return
    first = pc.index(ok, False).as_py()
    raise pa.ArrowInvalid(f"{arr[first].as_py()!r} is not a bool (numbers: 0 or 1)")


def converter(col: Column, target: pa.DataType) -> Converter:
    """The conversion for a declared column (raises on values it cannot take)."""
    name = col.type
    if name == "string":
        return _string_converter
    if name == "json":
        return _json_converter
    if name == "timestamp":
        return _with_trim(_ts_converter(col.format))
    if name == "date":
        return _with_trim(_date_converter(col.format))
    if name == "binary":
        return _cast_to(target)
    return _with_trim(_cast_to(target))


# --------------------------------------------------------------------------- at parse time

# Declared types the CSV reader may produce itself. For these, every text it converts
# gives the value the cast in `converter` gives (it trims spaces and tabs, as the cast's
# retry does; "" is null in both); what it refuses makes the parser fall back to text
# and conformance decides as always. Timestamps are left to conformance: parsing them
# early bought nothing measurable, and their offset rules live there.
CSV_TRUE = ["1", "True", "TRUE", "true"]
CSV_FALSE = ["0", "False", "FALSE", "false"]
_PARSE_TYPED = ("int32", "int64", "float32", "float64", "bool")


def parse_types(schema: Schema) -> dict[str, pa.DataType]:
    """Source column -> the Arrow type a CSV reader may parse it as: declared columns of a
    type above read from their own name, with no `format`, no `default`, and `fail` as
    their policy (a value that fails then fails the fragment, so parsing it twice costs
    nothing in the common case), and read by no other declared column."""
    readers = Counter(c.source_name for c in schema.columns)
    out: dict[str, pa.DataType] = {}
    for col in schema.columns:
        if (col.type in _PARSE_TYPED and col.source is None and col.format is None
                and readers[col.name] == 1
                and col.default is None and (col.on_invalid or schema.on_invalid) == "fail"):
            out[col.name] = arrow_type(col.type)
    return out


# --------------------------------------------------------------------------- defaults


def default_scalar(col: Column, target: pa.DataType | None = None) -> pa.Scalar:
    """`col.default` converted to the column's type; ValueError saying why it cannot be."""
    target = target if target is not None else arrow_type(col.type)
    value = col.default
    if col.type == "json":
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                value = json.dumps(value)
        else:
            value = _dumps(value)
    if (pa.types.is_decimal(target) and isinstance(value, int | float)
            and not isinstance(value, bool)):
        value = str(value)  # `default: 0` on a decimal column: exact, via its text
    try:
        src = pa.array([value])
        return converter(col, target)(src)[0]
    except (*ARROW_ERRORS, _BadJson) as e:
        raise ValueError(short(e)) from None


# --------------------------------------------------------------------------- failures


def convert_column(convert: Converter, src: pa.Array,
                   target: pa.DataType) -> tuple[pa.Array, dict[int, Invalid]]:
    """The converted column, with the values that failed set to null and listed."""
    if pa.types.is_null(src.type):
        return pa.nulls(len(src), target), {}
    try:
        return convert(src), {}
    except _BadJson as e:
        bad = dict(e.bad)
    except ARROW_ERRORS as e:
        if isinstance(e, pa.ArrowNotImplementedError | pa.ArrowTypeError):
            # the input type itself cannot be converted: every value fails alike
            why = Invalid(RejectReason.CANNOT_CONVERT, short(e))
            bad = {i: why for i in false_indices(pc.is_valid(src))}
        else:
            bad = _find_bad(src, convert)
            if pa.types.is_integer(target):
                _name_out_of_range(src, target, bad)
    if not bad:  # pragma: no cover - the whole failed but no single value did
        raise ValueError("conversion failed on the batch but on no single value")
    masked = pc.if_else(mask(len(src), bad), pa.scalar(None, src.type), src)
    try:
        return convert(masked), bad
    except (*ARROW_ERRORS, _BadJson):
        # values fail together but not alone: convert one by one
        parts = [pa.nulls(1, target) if i in bad else convert(masked.slice(i, 1))
                 for i in range(len(src))]
        return pa.concat_arrays(parts), bad


_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _name_out_of_range(src: pa.Array, target: pa.DataType, bad: dict[int, Invalid]) -> None:
    """An integer a narrower integer column cannot hold says so (pyarrow only says it
    failed to parse it)."""
    for i, why in bad.items():
        v = src[i].as_py()
        if isinstance(v, str) and _INTEGER.fullmatch(v):
            bad[i] = Invalid(why.reason, f"integer {v.strip()} is out of range for {target}")


def _find_bad(arr: pa.Array, convert: Converter, base: int = 0) -> dict[int, Invalid]:
    """Indices (relative to the whole column) whose value alone fails to convert."""
    try:
        convert(arr)
        return {}
    except _BadJson as e:
        return {base + i: r for i, r in e.bad.items()}
    except ARROW_ERRORS as e:
        if len(arr) == 1:
            return {base: Invalid(RejectReason.CANNOT_CONVERT, short(e))}
    if len(arr) <= 16:
        out: dict[int, Invalid] = {}
        for i in range(len(arr)):
            out.update(_find_bad(arr.slice(i, 1), convert, base + i))
        return out
    half = len(arr) // 2
    out = _find_bad(arr.slice(0, half), convert, base)
    out.update(_find_bad(arr.slice(half), convert, base + half))
    return out


def short(e: BaseException) -> str:
    msg = str(e).split("\n", 1)[0]
    return msg if len(msg) <= 200 else msg[:197] + "..."


def mask(n: int, rows: set[int] | dict[int, Any]) -> pa.Array:
    m = [False] * n
    for i in rows:
        m[i] = True
    return pa.array(m, type=pa.bool_())


def false_indices(valid: pa.Array) -> list[int]:
    """Positions where a boolean array is false."""
    return pc.indices_nonzero(pc.invert(valid)).to_pylist()
