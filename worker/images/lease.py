"""Leases on image tags: a tag someone is about to use stays until they let go, and when
each tag was last used.

A lease is a shared `flock` on the tag's lease file under the build cache, taken before
the tag is looked up or built and held until the image is in use (its container created,
or the image built on it). A prune claims a tag's lease file exclusively, without
waiting, before it removes the tag: a tag someone holds is skipped as in use, and a tag
the prune holds makes a leaser wait the one removal long and then find it gone (and
rebuild it). Locks die with their process, so a killed worker holds nothing.

Taking a lease stamps the file's mtime: the tag's last use, which orders what the store
keeps (worker/images/store.py). The files stay when their tags go (like the build locks):
removing one under a waiting leaser would let a second file, and a second lock, exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from worker.images.cache import cache_dir


def lease_path(tag: str) -> Path:
    return cache_dir() / "leases" / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".lease")


def _open(tag: str, exclusive_create: bool = False) -> tuple[int, bool]:
    """The lease file's descriptor, and whether this call created the file."""
    path = lease_path(tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive_create:
        with contextlib.suppress(FileExistsError):
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), False


@contextlib.contextmanager
def lease(tag: str) -> Iterator[None]:
    """Hold `tag` against prunes (waiting while one removes it) and stamp its last use."""
    fd, _ = _open(tag)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.utime(fd)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def record_use(tag: str, when: float) -> None:
    """Carry an earlier use over to `tag` (the packages image of a code image that goes)."""
    if when <= last_used(tag):
        return
    fd, _ = _open(tag)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if when > os.fstat(fd).st_mtime:
            os.utime(fd, (when, when))
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim(tag: str) -> Iterator[bool]:
    """For a prune: True while no one holds `tag` (and no one can take it), else False."""
    fd, created = _open(tag, exclusive_create=True)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        if created:
            os.utime(fd, (0, 0))  # a file made here records no use
        yield True
    finally:
        os.close(fd)


def last_used(tag: str) -> float:
    """When `tag` was last leased (seconds since the epoch), 0 if never."""
    try:
        return lease_path(tag).stat().st_mtime
    except FileNotFoundError:
        return 0.0
