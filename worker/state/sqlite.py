"""SQLite state: the embedded default, one file beside the connector's output."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from worker.models import Commit, RefreshRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fragments (
  name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refreshes (
  id TEXT PRIMARY KEY, started REAL NOT NULL, record TEXT NOT NULL
);
"""


class SqliteState:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the pool's threads, serialized by a lock: commits
        # are tiny, and WAL keeps readers (`connector show`) off the writer's back.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def committed(self) -> dict[str, Commit]:
        with self._lock:
            rows = self._db.execute("SELECT name, fingerprint, path, rows FROM fragments")
            return {r[0]: Commit(name=r[0], fingerprint=r[1], path=r[2], rows=r[3]) for r in rows}

    def fingerprints(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT name, fingerprint FROM fragments"))

    def commit(self, commit: Commit) -> Commit | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT fingerprint, path, rows FROM fragments WHERE name = ?", (commit.name,)
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO fragments VALUES (?, ?, ?, ?)",
                    (commit.name, commit.fingerprint, commit.path, commit.rows),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None or row[1] == commit.path:
            return None
        return Commit(name=commit.name, fingerprint=row[0], path=row[1], rows=row[2])

    def remove(self, names: list[str]) -> list[Commit]:
        gone = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for name in names:
                row = self._db.execute(
                    "DELETE FROM fragments WHERE name = ? RETURNING fingerprint, path, rows",
                    (name,),
                ).fetchone()
                if row:
                    gone.append(Commit(name=name, fingerprint=row[0], path=row[1], rows=row[2]))
            self._db.execute("COMMIT")
        return gone

    def save_refresh(self, record: RefreshRecord) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO refreshes VALUES (?, ?, ?)",
                             (record.id, record.started, record.model_dump_json()))

    def refreshes(self, limit: int = 10) -> list[RefreshRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM refreshes ORDER BY started DESC LIMIT ?", (limit,)
            ).fetchall()
        return [RefreshRecord.model_validate_json(r[0]) for r in rows]
