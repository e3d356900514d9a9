"""Warm sandbox sessions of one worker process, reused between jobs.

A session is keyed by (tenant, connector, bundle hash): it ran that exact version's
context() with that tenant's credentials, so it is never handed to another tenant,
connector or version. Idle sessions are retired after `idle_seconds`; all are closed
when the worker stops. One worker runs one job at a time, so no locking is needed.

At most `max_open` (CONNECTOR_WARM_SESSIONS) are kept: opening one more closes the
least recently used first. Each is a sandbox holding what its context() took (up to
its memory limit), a process tree and, for an allowlist, a network of its own; without
a bound one tenant refreshing hundreds of cheap connectors would leave hundreds of
them on one worker host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from worker.sandbox.base import Session
from worker.settings import settings


class SessionKey(NamedTuple):
    tenant: str
    connector: str
    bundle: str


class SessionCache:
    def __init__(self, idle_seconds: float = 300.0, max_open: int | None = None) -> None:
        self.idle_seconds = idle_seconds
        self.max_open = max_open or settings().warm_sessions
        self._open: dict[SessionKey, tuple[Session, float]] = {}

    def get(self, key: SessionKey, opener: Callable[[], Session]) -> Session:
        entry = self._open.get(key)
        if entry is not None and entry[0].usable:
            self._open[key] = (entry[0], time.monotonic())
            return entry[0]
        if entry is not None:
            self.discard(key)
        # Room first: the new session's memory is never added to a full worker's.
        while len(self._open) >= self.max_open:
            self.discard(min(self._open, key=lambda k: self._open[k][1]))
        session = opener()
        self._open[key] = (session, time.monotonic())
        return session

    def usable(self, key: SessionKey) -> bool:
        entry = self._open.get(key)
        return entry is not None and entry[0].usable

    def touch(self, key: SessionKey) -> None:
        entry = self._open.get(key)
        if entry is not None:
            self._open[key] = (entry[0], time.monotonic())

    def discard(self, key: SessionKey) -> None:
        entry = self._open.pop(key, None)
        if entry is not None:
            entry[0].close()

    def retire_idle(self) -> int:
        cutoff = time.monotonic() - self.idle_seconds
        old = [k for k, (s, used) in self._open.items() if used < cutoff or not s.usable]
        for k in old:
            self.discard(k)
        return len(old)

    def close_all(self) -> None:
        for k in list(self._open):
            self.discard(k)

    def __len__(self) -> int:
        return len(self._open)
