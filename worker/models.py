"""Data that crosses seams: fragments, commits, fragment outcomes, refresh summaries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from worker.errors import ConnectorError, FailureKind

__all__ = ["FailureKind"]  # re-exported: models and failures are read together


class Fragment(BaseModel):
    """One listed object. Names and fingerprints must be strings: no silent coercion."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: StrictStr
    fingerprint: StrictStr
    is_prefix: StrictBool = False

    def metadata(self) -> dict[str, Any]:
        """What the user's functions receive: the object as listed, extra keys included."""
        return self.model_dump()


class Commit(BaseModel):
    """A fragment version that is durable in the output and recorded in state."""

    model_config = ConfigDict(frozen=True)

    name: str
    fingerprint: str
    path: str
    rows: int


class FragmentFailure(ConnectorError):
    """A fragment could not be read. `kind` decides whether a retry can help."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.USER,
                 traceback: str = "", log: str = "") -> None:
        super().__init__(message, kind=kind)
        self.traceback = traceback
        self.log = log

    @classmethod
    def of(cls, e: ConnectorError) -> FragmentFailure:
        """Any deliberate error as the failure of the fragment (or listing) it stopped."""
        if isinstance(e, FragmentFailure):
            return e
        return cls(str(e), e.kind)

    def to_model(self, fragment: str) -> FailedFragment:
        return FailedFragment(name=fragment, kind=self.kind, message=self.message,
                              traceback=self.traceback, log=self.log)


class FailedFragment(BaseModel):
    name: str
    kind: FailureKind
    message: str
    traceback: str = ""
    log: str = ""


class ReadReport(BaseModel):
    """What the sandbox says about a finished read."""

    rows: int = 0
    rejected: int = 0
    warnings: list[str] = Field(default_factory=list)
    log: str = ""


class RefreshSummary(BaseModel):
    listed: int = 0
    read: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    rows: int = 0
    failures: list[FailedFragment] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return self.model_dump(include={"listed", "read", "skipped", "deleted", "failed", "rows"})


class RefreshRecord(BaseModel):
    """One refresh as the state store keeps it."""

    id: str
    started: float
    finished: float | None = None
    status: str = "running"  # running | ok | failed
    summary: RefreshSummary = Field(default_factory=RefreshSummary)
