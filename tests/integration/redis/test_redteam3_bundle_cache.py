"""A worker's bundle cache is bounded on disk, and a file takes disk space whatever its
size: versions of 10,000 empty files each (a bundle of a few KB) must not pile up
without end, eating the worker's inodes, because their bytes add up to nothing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ECHO_CODE, write_connector
from worker.queue import jobs
from worker.queue.sessions import SessionKey
from worker.registry import deploy
from worker.settings import settings

pytestmark = pytest.mark.redis


def _empty_files_folder(tmp: Path, name: str, files: int) -> Path:
    folder = write_connector(tmp / name, ECHO_CODE, f"name: {name}\ntenant: acme\n")
    many = folder / "many"
    many.mkdir()
    for i in range(files):
        (many / f"f{i}").touch()
    return folder


def test_versions_of_many_empty_files_are_evicted_too(redis_prefix, redis_client, tmp_path,
                                                       monkeypatch):
    cache = tmp_path / "bundles"
    monkeypatch.setenv("CONNECTOR_BUNDLE_CACHE", str(cache))
    monkeypatch.setenv("CONNECTOR_BUNDLE_CACHE_BYTES", str(64 << 20))
    monkeypatch.setenv("CONNECTOR_SESSION_IDLE", "0")
    settings.cache_clear()
    monkeypatch.setattr(jobs, "_connectors", type(jobs._connectors)())
    ctx = SimpleNamespace(redis=redis_client)
    for i in range(8):
        d = deploy(redis_client, _empty_files_folder(tmp_path, f"e{i}", 5000))
        jobs._connector(ctx, SessionKey("acme", f"e{i}", d.bundle))  # type: ignore[arg-type]
    entries = sum(1 for _ in cache.rglob("*"))
    # 40,000 entries were unpacked; a file or folder costs at least a 4 KiB block, so a
    # 64 MiB cache holds at most ~16,000 of them.
    assert entries <= (64 << 20) // 4096 + 100, entries
