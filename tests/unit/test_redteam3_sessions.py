"""A worker process keeps warm sessions between jobs; one tenant with many connectors
must not make it hold a container (and the memory its context() took) per connector.

Each warm session is a sandbox that ran the tenant's context(): up to its memory limit
held, a process tree, and for an allowlist a network of its own. Refreshing a few
hundred cheap connectors would otherwise leave a few hundred of them on one worker
host until they idle out.
"""

from __future__ import annotations

from worker.queue.sessions import SessionCache, SessionKey
from worker.settings import settings


class FakeSession:
    def __init__(self) -> None:
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


def test_warm_sessions_are_bounded_least_recently_used_out(monkeypatch):
    monkeypatch.setenv("CONNECTOR_WARM_SESSIONS", "3")
    settings.cache_clear()
    try:
        cache = SessionCache(300.0)
    finally:
        monkeypatch.delenv("CONNECTOR_WARM_SESSIONS")
        settings.cache_clear()
    opened: list[FakeSession] = []

    def opener() -> FakeSession:
        opened.append(FakeSession())
        return opened[-1]

    keys = [SessionKey("hog", f"c{i}", "d") for i in range(3)]
    for k in keys:
        cache.get(k, opener)
    cache.get(keys[0], opener)  # used again: now the most recent
    for i in range(3, 200):
        cache.get(SessionKey("hog", f"c{i}", "d"), opener)
    assert len(cache) == 3
    assert sum(not s.closed for s in opened) == 3  # every other one was closed
    assert not opened[199].closed  # the newest stays


def test_default_bound_is_small():
    cache = SessionCache(300.0)
    assert cache.max_open == settings().warm_sessions <= 8
