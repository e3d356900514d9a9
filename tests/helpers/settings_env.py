"""The project's settings read under a test's own environment variables, for a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from worker.settings import settings


@contextlib.contextmanager
def settings_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[None]:
    """`env` set (and settings read again) inside the block; restored after it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        settings.cache_clear()
