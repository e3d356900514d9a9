"""A worker's unpacked bundles on local disk, bounded by bytes, least recently used out.

Layout: `<CONNECTOR_BUNDLE_CACHE>/<tenant>/<connector>/<digest>/`. Every use of a
version touches its folder's mtime; after a new version is unpacked, the oldest
folders are deleted until the cache holds at most CONNECTOR_BUNDLE_CACHE_BYTES, each
file and folder counted in whole 4 KiB blocks (at least one: an empty file still takes
an inode and a block). A
folder used within the last `idle` seconds (CONNECTOR_SESSION_IDLE: another worker
process on this machine may hold a warm session over it) is never deleted, nor the one
just unpacked, so the bound is exceeded only by versions in use. A deleted version is
unpacked again from Redis when a job needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


def touch(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(folder)


def _versions(root: Path) -> list[Path]:
    return [p for p in root.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")]


# What one file or folder costs at least on disk (a block, and an inode): a version of
# 10,000 empty files is not free, or versions of them would never be evicted.
ENTRY_BYTES = 4096


def _size(folder: Path) -> int:
    """Disk bytes `folder` takes: each entry's size rounded up to whole blocks, at
    least one block each."""
    total = ENTRY_BYTES
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            size = p.stat().st_size if p.is_file() else 0
            total += max(ENTRY_BYTES, -(-size // ENTRY_BYTES) * ENTRY_BYTES)
    return total


def _last_used(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0


def prune(root: Path, max_bytes: int, keep: Path, idle: float) -> list[Path]:
    """Delete least recently used versions until `root` holds at most `max_bytes`;
    returns the folders deleted."""
    versions = sorted(_versions(root), key=_last_used)
    sizes = {v: _size(v) for v in versions}
    total = sum(sizes.values())
    recent = time.time() - idle
    deleted = []
    for v in versions:
        if total <= max_bytes:
            break
        if v == keep or _last_used(v) > recent:
            continue
        # Renamed out of the way first: another process sees the version or nothing.
        gone = v.parent / f".{v.name[:12]}-gone-{uuid.uuid4().hex[:8]}"
        try:
            v.rename(gone)
        except OSError:
            continue
        shutil.rmtree(gone, ignore_errors=True)
        total -= sizes[v]
        deleted.append(v)
    if total > max_bytes:
        log.warning("bundle cache %s holds %d bytes, over its %d byte bound, all of it "
                    "in use", root, total, max_bytes)
    return deleted
