"""Why a row was rejected: the closed set of reasons a rejects record can carry."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectReason(StrEnum):
    MISSING_COLUMN = "missing column"
    NULL_IN_NON_NULLABLE = "null in a non-nullable column"
    CANNOT_CONVERT = "cannot convert"
    INVALID_JSON = "invalid JSON"
    MALFORMED_ROW = "malformed row"
    EMPTY_ROW = "row has no fields"


@dataclass(frozen=True)
class Invalid:
    """One value that could not be taken: the reason and the library's detail."""

    reason: RejectReason
    detail: str = ""

    def describe(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)
