"""Schema conformance policy: parsed batches -> exactly the declared columns.

Runs inside the sandbox. Conversion itself is `worker.runtime.convert`; this module
decides what happens to values that fail it.

Rules (the lead's contract):
- Output columns are the declared ones, in order, named `column.name`, read from
  `column.source_name`; a missing input column is all-null (then defaults apply).
- Nulls take `default` when one is given; a default that cannot be converted to the
  column's type is a DataError at construction.
- Invalid values (cannot convert; or null in a `nullable: false` column without a
  default) per `column.on_invalid or schema.on_invalid`:
  fail -> DataError on the first invalid row (lowest row number of the batch);
  skip -> the row is dropped; default -> the value becomes `default` (or null). Under
  `default`, a non-nullable column without a default cannot take a value, so that row
  is dropped instead. Each affected row counts once toward `rejected`; when `rejected`
  exceeds `schema.max_errors`, DataError.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from worker.column_types import arrow_type
from worker.runtime.convert import (
    Converter,
    convert_column,
    converter,
    default_scalar,
    false_indices,
    mask,
    output_schema,
)
from worker.runtime.reasons import Invalid, RejectReason
from worker.spec import Column, OnInvalid, Schema

MAX_WARNINGS = 20


class DataError(Exception):
    """A value does not conform to the declared schema (or too many did)."""


@dataclass
class _Plan:
    column: Column
    target: pa.DataType
    convert: Converter
    default: pa.Scalar | None
    mode: OnInvalid


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
            mode: OnInvalid = col.on_invalid or schema.on_invalid
            default = None
            if col.default is not None:
                try:
                    default = default_scalar(col, target)
                except ValueError as e:
                    raise DataError(
                        f"fragment {self.fragment!r}: column {col.name!r} ({col.type}): "
                        f"default {col.default!r} cannot be converted: {e}") from None
            self._plans.append(_Plan(col, target, converter(col, target), default, mode))

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
            try:
                out, bad = convert_column(plan.convert, src, plan.target)
            except ValueError as e:  # pragma: no cover - see convert_column
                raise DataError(f"fragment {self.fragment!r}: column {col.name!r}: {e}") from e
            # nulls: default, or invalid when the column is not nullable
            if out.null_count:
                if plan.default is not None:
                    out = pc.fill_null(out, plan.default)
                elif not col.nullable:
                    what = Invalid(RejectReason.MISSING_COLUMN if src_i is None
                                   else RejectReason.NULL_IN_NON_NULLABLE)
                    for i in false_indices(pc.is_valid(out)):
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
                fill = plan.default if plan.default is not None else pa.scalar(None, plan.target)
                out = pc.if_else(mask(n, bad), fill, out)
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
            out_batch = out_batch.filter(pc.invert(mask(n, drop)))
        return out_batch

    # ------------------------------------------------------------------ helpers

    def _message(self, offset: int, i: int, plan: _Plan, src: pa.Array,
                 why: Invalid) -> str:
        col = plan.column
        head = (f"fragment {self.fragment!r} row {offset + i + 1} "
                f"column {col.name!r} ({col.type}): ")
        if why.reason in (RejectReason.MISSING_COLUMN, RejectReason.NULL_IN_NON_NULLABLE):
            return head + why.reason
        detail = why.describe() if why.reason is RejectReason.INVALID_JSON else why.detail
        return head + f"cannot convert {_value_repr(src, i)}: {detail}"

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
