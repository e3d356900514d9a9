"""The state seam: which fragment versions are committed, and the record of refreshes.

A store is scoped to one (tenant, connector). The dataset itself is a Delta table
(worker.table); the state is its index by fragment name, and the table's log is the
truth when the two disagree after a crash (worker.table.ledger reconciles them).

A refresh `stage`s each fragment version it wrote; once its table version is decided it
records a `PendingCommit`, commits the table, then applies the staged versions with
`commit_many`/`remove` and clears the pending record. `commit` is atomic per fragment
(fingerprint, path, rows together) and idempotent, so re-applying after a crash is safe.
SQLite backs the embedded mode, Redis the hosted one; refresh code sees only this protocol.
"""

from __future__ import annotations

from typing import Protocol

from worker.models import Commit, PendingCommit, RefreshRecord
from worker.state.staged import Staged


class StateStore(Protocol):
    # Which kind of store this is, recorded in every table version it commits
    # (worker.table.owner): "local" (a local refresh's SQLite) or "queue" (Redis).
    owner: str

    def committed(self) -> dict[str, Commit]:
        """Every committed fragment, by name."""
        ...

    def lookup(self, names: list[str]) -> dict[str, Commit]:
        """The committed versions of these fragments (those that have one): what a
        refresh's commit needs, without building a model per committed fragment."""
        ...

    def fingerprints(self) -> dict[str, str]:
        """Committed fingerprint by name: all a refresh's diff needs, and cheap to read
        for 100,000 fragments where `committed()` would build as many models."""
        ...

    def commit(self, commit: Commit) -> Commit | None:
        """Record `commit`, replacing the fragment's previous version, which is returned
        (its file can then be removed). Committing the same version twice is a no-op."""
        ...

    def commit_many(self, commits: list[Commit]) -> None:
        """Record these versions in one transaction (all or none of them), replacing
        the fragments' previous versions; idempotent like `commit`. A refresh applies
        its staged versions this way, a batch at a time."""
        ...

    def remove(self, names: list[str]) -> list[Commit]:
        """Drop fragments from the dataset; returns what was removed."""
        ...

    def stage(self, refresh_id: str, commit: Commit) -> None:
        """Record a fragment version written by this refresh, not yet in the table.
        Staging the same fragment again replaces the earlier entry."""
        ...

    def staged(self, refresh_id: str, names: list[str] | None = None) -> Staged:
        """The fragment versions this refresh staged (of `names` only, when given), as
        columns: a refresh's commit reads 100,000 of them without a model each."""
        ...

    def drop_staged(self, refresh_id: str) -> None: ...

    def staged_refreshes(self) -> list[str]:
        """Refresh ids with staged versions (a crashed refresh leaves some behind)."""
        ...

    def set_pending(self, pending: PendingCommit | None) -> None:
        """Record (or clear, with None) the table version about to be committed."""
        ...

    def pending(self) -> PendingCommit | None: ...

    def save_refresh(self, record: RefreshRecord) -> None: ...

    def refreshes(self, limit: int = 10) -> list[RefreshRecord]:
        """Most recent first."""
        ...
