"""Data that crosses seams: fragments, commits, fragment outcomes, refresh summaries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

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
    """A fragment version: its file is durable in the output. Staged while its refresh
    runs, committed once the refresh's table version is. `path` is relative to the
    dataset's root ("" for a fragment with no rows); `fingerprint` is the read key
    (worker.table.schema.read_key): the listed fingerprint and the schema it was read with.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    fingerprint: str
    path: str
    rows: int
    # what this read of the fragment dropped and defaulted (see ReadReport); a count of
    # the read that made the commit, not part of the dataset's state
    rejected: int = 0
    defaulted: int = 0
    warnings: list[str] = Field(default_factory=list, exclude=True)  # never stored
    size: int = 0


class PendingCommit(BaseModel):
    """A refresh's table version about to be committed, recorded in state first.

    `seq` is the table's transaction version for this project (Delta `txn` action):
    after a crash, a table whose txn version has reached `seq` holds this commit and the
    state catches up; a table below it never saw it and the staged files are dropped.
    """

    refresh_id: str
    seq: int
    deleted: list[str] = Field(default_factory=list)


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

    def to_model(self, fragment: str = "", step: Step = "fragment") -> FailedFragment:
        return FailedFragment(name=fragment, step=step, kind=self.kind, message=self.message,
                              traceback=self.traceback, log=self.log)


# Characters of a failure's message, traceback and log that are kept (stored in the
# refresh's record, shown by `status`). They are the tenant's text: an exception message
# of hundreds of MiB must not reach the shared state store whole.
MAX_FAILURE_TEXT = 8000


def cut_text(text: str, keep: int = MAX_FAILURE_TEXT) -> str:
    """`text`, or its head and tail (where the cause usually is) around a note of how
    much was cut when it is longer than `keep` characters."""
    if len(text) <= keep:
        return text
    half = keep // 2
    return (f"{text[:half]}\n[... {len(text) - 2 * half:,} characters cut ...]\n"
            f"{text[-half:]}")


# What failed: one fragment's read (named), or a step of the whole refresh (`refresh`:
# the refresh as a whole, e.g. stopped by the watchdog). Kept apart from the name, which
# is the user's and may be anything ("(listing)" included).
Step = Literal["fragment", "listing", "commit", "refresh"]


class FailedFragment(BaseModel):
    """A fragment's (or a step's: the listing's) failure as records keep it: every text
    bounded."""

    name: str = ""  # the fragment's; "" for a failed step of the whole refresh
    step: Step = "fragment"
    kind: FailureKind
    message: str
    traceback: str = ""
    log: str = ""

    @field_validator("message", "traceback", "log")
    @classmethod
    def _bounded(cls, v: str) -> str:
        return cut_text(v)

    def of_step(self, step: Step) -> FailedFragment:
        """This failure as a step's (the listing's, the commit's) rather than a fragment's."""
        return self.model_copy(update={"name": "", "step": step})

    @property
    def what(self) -> str:
        """What failed, as a report names it: `fragment 'x'`, `listing`, `commit`."""
        return f"fragment {self.name!r}" if self.step == "fragment" else self.step


class RejectedRow(BaseModel):
    """A row (or one value of it) that did not reach the dataset as it was."""

    row: int | None = None  # 1-based data row of the fragment
    line: int | None = None  # 1-based line, for rows the parser could not split
    column: str | None = None
    value: str | None = None  # the raw value, or the raw line
    reason: str
    detail: str = ""
    action: Literal["rejected", "defaulted"] = "rejected"


class ReadReport(BaseModel):
    """What the sandbox says about a finished read: read = rows + rejected."""

    rows: int = 0  # written
    read: int = 0
    rejected: int = 0  # rows dropped
    defaulted: int = 0  # values replaced by their column's default (or null)
    rejects: list[RejectedRow] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    log: str = ""


MAX_SUMMARY_WARNINGS = 20


class RefreshSummary(BaseModel):
    listed: int = 0
    read: int = 0
    skipped: int = 0  # unchanged since their commit
    # read by a refresh that crashed or was interrupted, committed by this one's
    # recovery: listed = read + skipped + recovered + failed (while nothing is cut short)
    recovered: int = 0
    deleted: int = 0
    failed: int = 0
    rows: int = 0
    rejected: int = 0
    defaulted: int = 0
    failures: list[FailedFragment] = Field(default_factory=list)
    # what the reads noticed without failing (invalid values, columns read as null),
    # the first MAX_SUMMARY_WARNINGS of them
    warnings: list[str] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return self.model_dump(include={"listed", "read", "skipped", "recovered", "deleted",
                                        "failed", "rows", "rejected", "defaulted"})


class Progress(BaseModel):
    """A local refresh as it runs: what a progress bar shows."""

    stage: str
    done: int  # fragments finished (read or failed)
    total: int
    rows: int = 0
    rejected: int = 0


class RefreshRecord(BaseModel):
    """One refresh as the state store keeps it."""

    id: str
    started: float
    finished: float | None = None
    # running | ok | failed | interrupted (a local refresh stopped by Ctrl-C or SIGTERM;
    # its summary counts what it kept: staged, committed by the next refresh)
    status: str = "running"
    picked_up: float | None = None  # when a worker began listing (queue mode)
    summary: RefreshSummary = Field(default_factory=RefreshSummary)

    @property
    def shown_status(self) -> str:
        """What a user is shown: an open refresh no worker has picked up is `queued`.
        `status` itself stays `running` while open, which the queue code keys on."""
        if self.status == "running" and self.picked_up is None:
            return "queued"
        return self.status
