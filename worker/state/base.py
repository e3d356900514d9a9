"""The state seam: which fragment versions are committed, and the record of refreshes.

A store is scoped to one (tenant, connector). `commit` is the moment a fragment version
joins the dataset: it must be atomic (fingerprint, path and row count together) and
idempotent (a retried job commits the same thing again harmlessly). SQLite backs the
embedded mode, Redis the hosted one; refresh code sees only this protocol.
"""

from __future__ import annotations

from typing import Protocol

from worker.models import Commit, RefreshRecord


class StateStore(Protocol):
    def committed(self) -> dict[str, Commit]:
        """Every committed fragment, by name."""
        ...

    def fingerprints(self) -> dict[str, str]:
        """Committed fingerprint by name: all a refresh's diff needs, and cheap to read
        for 100,000 fragments where `committed()` would build as many models."""
        ...

    def commit(self, commit: Commit) -> Commit | None:
        """Record `commit`, replacing the fragment's previous version, which is returned
        (its file can then be removed). Committing the same version twice is a no-op."""
        ...

    def remove(self, names: list[str]) -> list[Commit]:
        """Drop fragments from the dataset; returns what was removed."""
        ...

    def save_refresh(self, record: RefreshRecord) -> None: ...

    def refreshes(self, limit: int = 10) -> list[RefreshRecord]:
        """Most recent first."""
        ...
