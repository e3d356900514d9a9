"""Schema conformance: parsed batches -> exactly the declared columns and types.

Runs inside the sandbox, on the hot path. Every column is converted with one
vectorized pyarrow cast; only when that cast fails does the slow path look for the
offending rows (by bisecting the column, so k bad rows cost O(k log n) casts).

Rules (the lead's contract):
- Output columns are the declared ones, in order, named `column.name`, read from
  `column.source_name`; a missing input column is all-null (then defaults apply).
- Nulls take `default` when one is given; a default that cannot be converted to the
  column's type is a DataError at construction.
- timestamp -> `timestamp[us, tz=UTC]`, always: values with an offset (`Z`, `+02:00`,
  `%z`) are converted to UTC; values without one are taken to BE UTC. Input that is
  already a timestamp is converted likewise (naive -> labelled UTC).
- date/timestamp with `format` use strptime; otherwise ISO-8601. Strings to
  numbers/bool/date/timestamp/decimal are retried with surrounding whitespace trimmed.
- decimal casts are exact: a value that needs rounding ('1.234' into decimal(10,2)) is
  invalid.
- json -> string holding JSON text: struct/list/map/number/bool inputs are serialized
  with json.dumps (dates/decimals via str); string inputs must already be valid JSON.
- Invalid values (cannot convert; or null in a `nullable: false` column without a
  default) per `column.on_invalid or schema.on_invalid`:
  fail -> DataError on the first invalid row (lowest row number of the batch);
  skip -> the row is dropped; default -> the value becomes `default` (or null). Under
  `default`, a non-nullable column without a default cannot take a value, so that row
  is dropped instead. Each affected row counts once toward `rejected`; when `rejected`
  exceeds `schema.max_errors`, DataError.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from worker.spec import Column, OnInvalid, Schema

MAX_WARNINGS = 20
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError,
                 OverflowError)
_UTC_US = pa.timestamp("us", tz="UTC")
_CAST_TS = pc.CastOptions(_UTC_US, allow_time_truncate=True)


class DataError(Exception):
    """A value does not conform to the declared schema (or too many did)."""


def arrow_type(type_name: str) -> pa.DataType:
    """The Arrow type for a spec type name (as normalised by worker.spec.Column)."""
    simple: dict[str, pa.DataType] = {
        "string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
        "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(),
        "date": pa.date32(), "timestamp": _UTC_US, "binary": pa.binary(),
        "json": pa.string(),
    }
    if type_name in simple:
        return simple[type_name]
    if type_name.startswith("decimal("):
        p, s = type_name[len("decimal("):-1].split(",")
        return pa.decimal128(int(p), int(s))
    raise ValueError(f"unknown type {type_name!r}")


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
        except _ARROW_ERRORS:
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
            except pa.ArrowInvalid:
                ts = pc.cast(arr, pa.timestamp("us"))  # '2024-01-02T03:04:05'
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
    def __init__(self, bad: dict[int, str]) -> None:
        super().__init__("invalid JSON")
        self.bad = bad


def _json_converter(arr: pa.Array) -> pa.Array:
    t = arr.type
    if _is_stringy(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        values = pc.cast(arr, pa.string()) if not pa.types.is_string(t) else arr
        bad: dict[int, str] = {}
        loads = json.loads
        for i, v in enumerate(values.to_pylist()):
            if v is None:
                continue
            try:
                loads(v)
            except ValueError as e:
                bad[i] = f"invalid JSON: {e}"
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
        return pc.cast(arr, target)

    return convert


def _converter(col: Column, target: pa.DataType) -> Converter:
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


# --------------------------------------------------------------------------- conformer


@dataclass
class _Plan:
    column: Column
    target: pa.DataType
    convert: Converter
    default: pa.Scalar | None
    mode: OnInvalid


def _find_bad(arr: pa.Array, convert: Converter, base: int = 0) -> dict[int, str]:
    """Indices (relative to the whole column) whose value alone fails to convert."""
    try:
        convert(arr)
        return {}
    except _BadJson as e:
        return {base + i: r for i, r in e.bad.items()}
    except _ARROW_ERRORS as e:
        if len(arr) == 1:
            return {base: _short(e)}
    if len(arr) <= 16:
        out: dict[int, str] = {}
        for i in range(len(arr)):
            out.update(_find_bad(arr.slice(i, 1), convert, base + i))
        return out
    half = len(arr) // 2
    out = _find_bad(arr.slice(0, half), convert, base)
    out.update(_find_bad(arr.slice(half), convert, base + half))
    return out


def _short(e: BaseException) -> str:
    msg = str(e).split("\n", 1)[0]
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _value_repr(arr: pa.Array, i: int) -> str:
    try:
        v = arr[i].as_py()
    except Exception:  # noqa: BLE001 - a display helper must not fail
        v = str(arr[i])
    text = repr(v)
    return text if len(text) <= 100 else text[:97] + "..."


class Conformer:
    """Conforms one fragment's batches, tracking row numbers and rejections across them."""

    def __init__(self, schema: Schema, fragment: str) -> None:
        self.schema = schema
        self.fragment = fragment
        self.rejected = 0
        self.warnings: list[str] = []
        self._offset = 0  # input rows of this fragment seen before the current batch
        self._suppressed = 0
        self._last_invalid = ""
        self._plans: list[_Plan] = []
        self.arrow_schema = output_schema(schema)
        for col in schema.columns:
            target = arrow_type(col.type)
            convert = _converter(col, target)
            mode: OnInvalid = col.on_invalid or schema.on_invalid
            default = None
            if col.default is not None:
                default = self._default_scalar(col, target, convert)
            self._plans.append(_Plan(col, target, convert, default, mode))

    def _default_scalar(self, col: Column, target: pa.DataType,
                        convert: Converter) -> pa.Scalar:
        value = col.default
        if col.type == "json":
            if isinstance(value, str):
                try:
                    json.loads(value)
                except ValueError:
                    value = json.dumps(value)
            else:
                value = _dumps(value)
        try:
            src = pa.array([value])
            return convert(src)[0]
        except (*_ARROW_ERRORS, _BadJson) as e:
            raise DataError(f"fragment {self.fragment!r}: column {col.name!r} ({col.type}): "
                            f"default {col.default!r} cannot be converted: {_short(e)}") from None

    # ------------------------------------------------------------------ public

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        offset = self._offset
        self._offset += n
        if not self._plans:
            return batch
        names = batch.schema.names
        index = {name: i for i, name in enumerate(names)}
        arrays: list[pa.Array] = []
        drop: set[int] = set()  # rows removed from the output (skip, or default w/o value)
        counted: set[int] = set()  # rows counted toward `rejected`
        first_fail: tuple[int, str] | None = None
        for plan in self._plans:
            col = plan.column
            src_i = index.get(col.source_name)
            src = batch.column(src_i) if src_i is not None else pa.nulls(n, pa.null())
            out, bad = self._convert(plan, src)
            # nulls: default, or invalid when the column is not nullable
            if out.null_count:
                if plan.default is not None:
                    out = pc.fill_null(out, plan.default)
                elif not col.nullable:
                    what = ("missing column" if src_i is None
                            else "null in a non-nullable column")
                    valid = pc.is_valid(out)
                    for i in _false_indices(valid):
                        bad.setdefault(i, what)
            if not bad:
                arrays.append(out)
                continue
            if plan.mode == "fail":
                i = min(bad)
                if first_fail is None or i < first_fail[0]:
                    first_fail = (i, self._message(offset, i, plan, src, bad[i]))
                arrays.append(out)
                continue
            counted.update(bad)
            dropping = plan.mode == "skip" or (plan.default is None and not col.nullable)
            for i in sorted(bad)[:3]:
                self._warn(self._message(offset, i, plan, src, bad[i])
                           + (" (row skipped)" if dropping else " (default used)"))
            if dropping:
                drop.update(bad)
            else:
                mask = _mask(n, bad)
                fill = plan.default if plan.default is not None else pa.scalar(None, plan.target)
                out = pc.if_else(mask, fill, out)
            arrays.append(out)
        if first_fail is not None:
            raise DataError(first_fail[1])
        out_batch = pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema)
        if counted:
            self.rejected += len(counted)
            if self.rejected > self.schema.max_errors:
                raise DataError(
                    f"fragment {self.fragment!r}: {self.rejected} invalid row(s) exceed "
                    f"max_errors={self.schema.max_errors}; last: {self._last_invalid}"
                )
        if drop:
            keep = pc.invert(_mask(n, drop))
            out_batch = out_batch.filter(keep)
        return out_batch

    # ------------------------------------------------------------------ helpers

    def _convert(self, plan: _Plan, src: pa.Array) -> tuple[pa.Array, dict[int, str]]:
        if pa.types.is_null(src.type):
            return pa.nulls(len(src), plan.target), {}
        try:
            return plan.convert(src), {}
        except _BadJson as e:
            bad = dict(e.bad)
        except _ARROW_ERRORS as e:
            if isinstance(e, pa.ArrowNotImplementedError | pa.ArrowTypeError):
                reason = _short(e)  # the input type itself cannot be converted
                bad = {i: reason for i in _false_indices(pc.is_valid(src))}
            else:
                bad = _find_bad(src, plan.convert)
        if not bad:  # pragma: no cover - the whole failed but no single value did
            raise DataError(f"fragment {self.fragment!r}: column {plan.column.name!r}: "
                            "conversion failed on the batch but on no single value")
        masked = pc.if_else(_mask(len(src), bad), pa.scalar(None, src.type), src)
        try:
            return plan.convert(masked), bad
        except (*_ARROW_ERRORS, _BadJson):
            # values fail together but not alone: convert one by one
            parts = [pa.nulls(1, plan.target) if i in bad else plan.convert(masked.slice(i, 1))
                     for i in range(len(src))]
            return pa.concat_arrays(parts), bad

    def _message(self, offset: int, i: int, plan: _Plan, src: pa.Array, reason: str) -> str:
        col = plan.column
        head = (f"fragment {self.fragment!r} row {offset + i + 1} "
                f"column {col.name!r} ({col.type}): ")
        if reason in ("missing column", "null in a non-nullable column"):
            return head + reason
        return head + f"cannot convert {_value_repr(src, i)}: {reason}"

    def _warn(self, message: str) -> None:
        self._last_invalid = message
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self._suppressed += 1
            more = f"... and {self._suppressed} more invalid value(s)"
            if self.warnings[-1].startswith("... and "):
                self.warnings[-1] = more
            else:
                self.warnings.append(more)


def _mask(n: int, rows: set[int] | dict[int, str]) -> pa.Array:
    m = [False] * n
    for i in rows:
        m[i] = True
    return pa.array(m, type=pa.bool_())


def _false_indices(valid: pa.Array) -> list[int]:
    """Positions where a boolean array is false."""
    idx = pc.indices_nonzero(pc.invert(valid))
    return idx.to_pylist()
