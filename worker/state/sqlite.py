"""SQLite state: the embedded default, one file inside the dataset's folder.

Living inside the dataset (and holding paths relative to it), the state travels with
the folder: a copy or a move of the folder is a whole dataset, and refreshing a copy
touches nothing of the original.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from worker.models import Commit, PendingCommit, RefreshRecord
from worker.state.staged import Staged

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fragments (
  name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refreshes (
  id TEXT PRIMARY KEY, started REAL NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS staged (
  refresh TEXT NOT NULL, name TEXT NOT NULL, commit_json TEXT NOT NULL,
  PRIMARY KEY (refresh, name)
);
CREATE TABLE IF NOT EXISTS pending (
  id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL
);
"""

_STAGED_FIELDS = ("fingerprint", "path", "rows", "size", "rejected", "defaulted")


class SqliteState:
    owner = "local"

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
            rows = self._db.execute("SELECT name, fingerprint, path, rows, size FROM fragments")
            return {r[0]: Commit(name=r[0], fingerprint=r[1], path=r[2], rows=r[3], size=r[4])
                    for r in rows}

    def lookup(self, names: list[str]) -> dict[str, Commit]:
        out: dict[str, Commit] = {}
        with self._lock:
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                rows = self._db.execute(
                    "SELECT name, fingerprint, path, rows, size FROM fragments WHERE name IN "
                    f"({','.join('?' * len(chunk))})", chunk)
                out.update({r[0]: Commit(name=r[0], fingerprint=r[1], path=r[2], rows=r[3],
                                         size=r[4]) for r in rows})
        return out

    def fingerprints(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT name, fingerprint FROM fragments"))

    def commit(self, commit: Commit) -> Commit | None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT fingerprint, path, rows, size FROM fragments WHERE name = ?",
                    (commit.name,),
                ).fetchone()
                self._db.execute(
                    "INSERT OR REPLACE INTO fragments VALUES (?, ?, ?, ?, ?)",
                    (commit.name, commit.fingerprint, commit.path, commit.rows, commit.size),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None or row[1] == commit.path:
            return None
        return Commit(name=commit.name, fingerprint=row[0], path=row[1], rows=row[2],
                      size=row[3])

    def commit_many(self, commits: list[Commit]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO fragments VALUES (?, ?, ?, ?, ?)",
                    [(c.name, c.fingerprint, c.path, c.rows, c.size) for c in commits])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove(self, names: list[str]) -> list[Commit]:
        gone = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for name in names:
                row = self._db.execute(
                    "DELETE FROM fragments WHERE name = ? RETURNING fingerprint, path, rows, size",
                    (name,),
                ).fetchone()
                if row:
                    gone.append(Commit(name=name, fingerprint=row[0], path=row[1], rows=row[2],
                                       size=row[3]))
            self._db.execute("COMMIT")
        return gone

    def stage(self, refresh_id: str, commit: Commit) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO staged VALUES (?, ?, ?)",
                             (refresh_id, commit.name, commit.model_dump_json()))

    def staged(self, refresh_id: str, names: list[str] | None = None) -> Staged:
        # The JSON is taken apart by SQLite: no model (or dict) per staged version.
        select = ("SELECT name, " + ", ".join(f"json_extract(commit_json, '$.{f}')"
                                              for f in _STAGED_FIELDS)
                  + " FROM staged WHERE refresh = ?")
        with self._lock:
            if names is None:
                rows = self._db.execute(select, (refresh_id,)).fetchall()
            else:
                rows = []
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    rows += self._db.execute(
                        f"{select} AND name IN ({','.join('?' * len(chunk))})",
                        (refresh_id, *chunk)).fetchall()
        return Staged.from_rows(rows)

    def drop_staged(self, refresh_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM staged WHERE refresh = ?", (refresh_id,))

    def staged_refreshes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT refresh FROM staged")]

    def set_pending(self, pending: PendingCommit | None) -> None:
        with self._lock:
            if pending is None:
                self._db.execute("DELETE FROM pending")
            else:
                self._db.execute("INSERT OR REPLACE INTO pending VALUES (1, ?)",
                                 (pending.model_dump_json(),))

    def pending(self) -> PendingCommit | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM pending").fetchone()
        return None if row is None else PendingCommit.model_validate_json(row[0])

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
