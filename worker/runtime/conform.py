"""Schema conformance policy: parsed batches -> exactly the declared columns.

Runs inside the sandbox. Conversion itself is `worker.runtime.convert`; this module
decides what happens to values that fail it, and reports every row it drops and every
value it replaces to the fragment's `RowRejects`.

Rules:
- Output columns are the declared ones, in order, named `column.name`, read from
  `column.source_name`. A declared column that no batch of the fragment carries is an
  error (`schema.require_no_missing_fields`, on by default); with the check off it is
  all-null (then defaults apply) and a warning says so. Undeclared input columns are
  dropped, or an error with `require_no_extra_fields`.
- Nulls take `default` when one is given; a default that cannot be converted to the
  column's type is a spec error (and a DataError here, for specs built elsewhere).
- Invalid values (cannot convert; or null in a `nullable: false` column without a
  default) per `column.on_invalid or schema.on_invalid`:
  fail -> DataError on the first invalid row (lowest row number of the batch);
  skip -> the row is dropped (rejected); default -> the value becomes `default` (or
  null) and counts as defaulted. Under `default`, a non-nullable column without a
  default cannot take a value, so that row is rejected instead. Every row with an
  invalid value counts toward the error limits (see `worker.runtime.rejects`).
- Without declared columns batches pass through; rows with no fields at all (`{}`)
  cannot be stored and are rejected.
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
from worker.runtime.rejects import DataError, RejectRecord, RowRejects
from worker.spec import Column, OnInvalid, ParserSpec, Schema

__all__ = ["Conformer", "DataError"]


@dataclass
class _Plan:
    column: Column
    target: pa.DataType
    convert: Converter
    default: pa.Scalar | None
    mode: OnInvalid


def _value_text(arr: pa.Array, i: int) -> str | None:
    try:
        v = arr[i].as_py()
    except Exception:  # noqa: BLE001 - a display helper must not fail
        return str(arr[i])
    return None if v is None else v if isinstance(v, str) else repr(v)


def _value_repr(arr: pa.Array, i: int) -> str:
    try:
        v = arr[i].as_py()
    except Exception:  # noqa: BLE001 - a display helper must not fail
        v = str(arr[i])
    text = repr(v)
    return text if len(text) <= 100 else text[:97] + "..."


def _type_matches(src: pa.DataType, col: Column, target: pa.DataType) -> bool:
    """For require_field_type_match_schema: text and nulls always cast; typed input must
    already be the declared type (any timestamp unit, dictionary-encoded values)."""
    if pa.types.is_dictionary(src):
        src = src.value_type
    if pa.types.is_string(src) or pa.types.is_large_string(src) or pa.types.is_null(src):
        return True
    if col.type == "timestamp":
        return pa.types.is_timestamp(src)
    if col.type == "json":
        return True
    return src == target


class Conformer:
    """Conforms one fragment's batches, tracking row numbers and rejections across them."""

    def __init__(self, schema: Schema, fragment: str, rejects: RowRejects | None = None) -> None:
        self.schema = schema
        self.fragment = fragment
        self.log = rejects if rejects is not None else RowRejects(fragment, schema, ParserSpec())
        self._offset = 0  # input rows of this fragment seen before the current batch
        self._seen: set[str] = set()  # declared source columns some batch carried
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

    @property
    def rejected(self) -> int:
        return self.log.rejected

    @property
    def defaulted(self) -> int:
        return self.log.defaulted

    @property
    def warnings(self) -> list[str]:
        return self.log.warnings

    # ------------------------------------------------------------------ public

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        offset = self._offset
        self._offset += n
        self.log.read += n
        if not self._plans:
            return self._pass_through(batch, offset)
        names = batch.schema.names
        index = {name: i for i, name in enumerate(names)}
        if self.schema.require_no_extra_fields and n:
            declared = {c.source_name for c in self.schema.columns}
            extra = [x for x in names if x not in declared]
            if extra:
                raise DataError(f"fragment {self.fragment!r}: column(s) "
                                f"{', '.join(map(repr, extra))} in the data are not declared "
                                "in the schema (require_no_extra_fields)")
        arrays: list[pa.Array] = []
        drop: set[int] = set()  # rows removed from the output
        counted: set[int] = set()  # rows with an invalid value
        records: list[RejectRecord] = []
        defaulted = 0
        first_fail: tuple[int, str] | None = None
        for plan in self._plans:
            col = plan.column
            src_i = index.get(col.source_name)
            src = batch.column(src_i) if src_i is not None else pa.nulls(n, pa.null())
            if src_i is not None:
                self._seen.add(col.source_name)
                if (self.schema.require_field_type_match_schema
                        and not _type_matches(src.type, col, plan.target)):
                    raise DataError(
                        f"fragment {self.fragment!r}: column {col.name!r} is {src.type} in "
                        f"the data, declared {col.type} (require_field_type_match_schema)")
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
                self.log.warn(self._message(offset, i, plan, src, bad[i])
                              + (" (row skipped)" if dropping else " (default used)"))
            for i in sorted(bad):
                records.append(RejectRecord(
                    offset + i + 1, None, col.name, _value_text(src, i), bad[i].reason,
                    bad[i].detail, "rejected" if dropping else "defaulted"))
            if dropping:
                drop.update(bad)
            else:
                defaulted += len(bad)
                fill = plan.default if plan.default is not None else pa.scalar(None, plan.target)
                out = pc.if_else(mask(n, bad), fill, out)
            arrays.append(out)
        if first_fail is not None:
            raise DataError(first_fail[1])
        out_batch = pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema)
        if counted:
            # A value of a row that is dropped anyway was not defaulted.
            for r in records:
                if r.action == "defaulted" and r.row is not None and r.row - offset - 1 in drop:
                    defaulted -= 1
                    r = RejectRecord(r.row, r.line, r.column, r.value, r.reason, r.detail,
                                     "rejected")
                self.log.invalid(r)
            self.log.rejected += len(drop)
            self.log.defaulted += defaulted
            self.log.count_invalid(len(counted))
        if drop:
            out_batch = out_batch.filter(pc.invert(mask(n, drop)))
        self.log.written += out_batch.num_rows
        return out_batch

    def finish(self) -> None:
        """The fragment ended: checks that need all of it (missing columns, percentages)."""
        if self._plans and self.log.read:
            missing = [c for c in self.schema.columns if c.source_name not in self._seen]
            for c in missing:
                what = (f"fragment {self.fragment!r}: column {c.name!r}"
                        + (f" (source {c.source_name!r})" if c.source else "")
                        + " is declared but not in the data")
                instead = "its default" if c.default is not None else "null"
                if self.schema.require_no_missing_fields:
                    raise DataError(what + " (require_no_missing_fields; set it to false "
                                    f"to read the column as {instead})")
                self.log.note(what + ": read as " + instead)
        self.log.finish()

    # ------------------------------------------------------------------ helpers

    def _pass_through(self, batch: pa.RecordBatch, offset: int) -> pa.RecordBatch:
        if batch.num_columns or not batch.num_rows:
            self.log.written += batch.num_rows
            return batch
        # Rows without a single field ({}): a dataset cannot hold a row of no columns.
        for i in range(batch.num_rows):
            self.log.invalid(RejectRecord(offset + i + 1, None, None, "{}",
                                          RejectReason.EMPTY_ROW, "", "rejected"))
        self.log.rejected += batch.num_rows
        # Recorded, not an error: such a row carries no value that could be lost.
        self.log.note(f"fragment {self.fragment!r}: {batch.num_rows} row(s) with no fields "
                      "rejected")
        return batch.slice(0, 0)

    def _message(self, offset: int, i: int, plan: _Plan, src: pa.Array,
                 why: Invalid) -> str:
        col = plan.column
        head = (f"fragment {self.fragment!r} row {offset + i + 1} "
                f"column {col.name!r} ({col.type}): ")
        if why.reason in (RejectReason.MISSING_COLUMN, RejectReason.NULL_IN_NON_NULLABLE):
            return head + why.reason
        detail = why.describe() if why.reason is RejectReason.INVALID_JSON else why.detail
        return head + f"cannot convert {_value_repr(src, i)}: {detail}"
