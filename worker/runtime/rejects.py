"""One fragment's row accounting: rows read, written, rejected, values defaulted.

Runs inside the sandbox. Parsers report rows they cannot split into fields
(`malformed`); conformance reports values it cannot take (`invalid`). Each becomes a
`RejectRecord` (sent to the host with the fragment's `done` frame, then written to the
rejects dataset), and the error limits are checked here, in one place:
- a malformed row is skipped when the schema's `on_invalid` is not `fail` or an error
  limit (`max_error_count`/`max_error_percentage`) is set; otherwise it fails the
  fragment with its line number;
- rows with any invalid value count toward `parser.max_error_count` (or, when neither
  it nor `max_error_percentage` is given, `schema.max_errors`); exceeding it fails the
  fragment;
- `parser.max_error_percentage` is checked when the fragment ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from worker.runtime.reasons import RejectReason
from worker.spec import ParserSpec, Schema

MAX_WARNINGS = 20
# Kept per fragment (all are counted): bounds the `done` frame and the host's memory.
MAX_RECORDS = 100_000
MAX_VALUE = 1000  # characters of a raw value or line kept in a record
Action = Literal["rejected", "defaulted"]


class DataError(Exception):
    """A value does not conform to the declared schema (or too many did)."""


@dataclass(frozen=True)
class RejectRecord:
    row: int | None  # 1-based data row of the fragment (None when the row never parsed)
    line: int | None  # 1-based physical line, for rows the parser could not split
    column: str | None
    value: str | None  # the raw value (or the raw line) as text
    reason: RejectReason
    detail: str
    action: Action

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d["reason"] = str(self.reason)
        return d


class RowRejects:
    def __init__(self, fragment: str, schema: Schema, parser: ParserSpec) -> None:
        self.fragment = fragment
        self.schema = schema
        self.parser = parser
        self.read = 0
        self.written = 0
        self.rejected = 0  # rows dropped
        self.defaulted = 0  # values replaced by the default (or null)
        self.invalid_rows = 0  # rows with anything wrong: what the limits count
        self.records: list[RejectRecord] = []
        # Where each record sits in the input, in data rows: records are reported as
        # parsers and conformance find them (malformed lines of a block before the
        # block's invalid values, values column by column), and `finish` puts them
        # back in the input's order.
        self._at: list[float] = []
        self._malformed = 0
        self.warnings: list[str] = []
        self._suppressed = 0
        self._dropped = 0  # records over MAX_RECORDS
        self._last = ""

    # ------------------------------------------------------------------ policy

    @property
    def skips_malformed(self) -> bool:
        return (self.schema.on_invalid != "fail" or self.parser.max_error_count is not None
                or self.parser.max_error_percentage is not None)

    @property
    def max_count(self) -> tuple[str, int] | None:
        if self.parser.max_error_count is not None:
            return "max_error_count", self.parser.max_error_count
        if self.parser.max_error_percentage is not None:
            return None  # the percentage alone decides, at the end
        return "max_errors", self.schema.max_errors

    # ------------------------------------------------------------------ reports

    def malformed(self, line: int | None, text: str, detail: str,
                  reason: RejectReason = RejectReason.MALFORMED_ROW,
                  rows_before: int | None = None) -> None:
        """A row the parser skipped (call only when `skips_malformed`). `rows_before`:
        the fragment's data rows that parsed before it, for the records' order (else the
        rows conformed so far, which misses those of the block being parsed)."""
        if rows_before is None:
            rows_before = self.read - self._malformed
        self.read += 1
        self.rejected += 1
        self._malformed += 1
        self.invalid(RejectRecord(None, line, None, text, reason, detail, "rejected"),
                     at=rows_before + 0.5)
        where = f"line {line}" if line is not None else "a row"
        self.warn(f"fragment {self.fragment!r} {where}: {detail} (row skipped)")
        self.count_invalid(1)

    @property
    def malformed_rows(self) -> int:
        return self._malformed

    def invalid(self, record: RejectRecord, at: float | None = None) -> None:
        """`at`: the record's place in the input in data rows (default: its row)."""
        if len(self.records) >= MAX_RECORDS:
            self._dropped += 1
            return
        if record.value is not None and len(record.value) > MAX_VALUE:
            record = replace(record, value=record.value[:MAX_VALUE] + "...")
        self.records.append(record)
        self._at.append(at if at is not None else float(record.row or 0))

    def count_invalid(self, rows: int) -> None:
        self.invalid_rows += rows
        if self.max_count is None:
            return
        name, limit = self.max_count
        if self.invalid_rows > limit:
            raise DataError(f"fragment {self.fragment!r}: {self.invalid_rows} invalid row(s) "
                             f"exceed {name}={limit}; last: {self._last}")

    def finish(self) -> None:
        # Stable: one row's values stay in column order.
        order = sorted(range(len(self.records)), key=self._at.__getitem__)
        self.records = [self.records[i] for i in order]
        self._at = [self._at[i] for i in order]
        if self._dropped:
            self.note(f"fragment {self.fragment!r}: {self._dropped} more reject record(s) "
                      f"counted but not kept (over {MAX_RECORDS} in one fragment)")
        pct = self.parser.max_error_percentage
        if pct is not None and self.read and self.invalid_rows * 100 / self.read > pct:
            raise DataError(
                f"fragment {self.fragment!r}: {self.invalid_rows} of {self.read} row(s) "
                f"invalid ({self.invalid_rows * 100 / self.read:.1f}%) exceed "
                f"max_error_percentage={pct:g}; last: {self._last}")

    def warn(self, message: str) -> None:
        self._last = message
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
            return
        self._suppressed += 1
        more = f"... and {self._suppressed} more invalid value(s)"
        if self.warnings[-1].startswith("... and "):
            self.warnings[-1] = more
        else:
            self.warnings.append(more)

    def note(self, message: str) -> None:
        """A warning that is not about an invalid value (kept apart from the cap)."""
        self.warnings.insert(0, message)

