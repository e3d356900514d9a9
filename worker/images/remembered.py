"""A folder's content digest, remembered by its files' stat signatures.

A code image's tag hashes every byte of the connector folder (tags.py), so finding the
image for a folder reads the whole folder, on every `connector refresh` and `connector
test` in Docker: a folder that carries data files (a lookup table, sample fragments)
pays for reading and hashing them on each run, before any container starts (~0.3 s of
one core for 270 MB). Here the digest is kept per folder under the build cache, with
what it was computed from: a hash of the other inputs and each file's name, device,
inode, size, mode, mtime and ctime. While all of those are unchanged the digest is
reused and no file is read; any difference, or an unreadable entry, hashes again.

As git's index does, this trusts that changing a file's bytes changes its mtime or
ctime: every write does, `touch -d` and `os.utime` set the mtime back but move the ctime,
and a file replaced by another has a new inode or ctime. A file written again within the
file system's timestamp resolution of its last change could still look unchanged
("racily clean"), so a digest is only remembered when every file's mtime and ctime are
more than `SETTLED_S` older than the moment hashing began (by this machine's clock);
a folder changed more recently is hashed on every run until it settles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from worker.folder import FolderFile
from worker.images.cache import cache_dir
from worker.images.tags import digest, tree_parts

SETTLED_S = 2.0

Signature = list[tuple[str, int, int, int, int, int, int]]


def folder_digest(folder: Path, head: Sequence[str | bytes],
                  files: Sequence[FolderFile]) -> str:
    """`digest([*head, *tree_parts(files)])`, without reading the files when the folder
    and `head` are as they were when it was last computed."""
    entry = _entry_path(folder)
    started = _now_ns()
    before = _signature(files)
    if before is None:  # a file went away since the walk: hash, and fail, as before
        return digest([*head, *tree_parts(files)])
    key = _key(head, before)
    if (known := _load(entry, key)) is not None:
        return known
    value = digest([*head, *tree_parts(files)])
    if _settled(before, started) and _signature(files) == before:  # unchanged while read
        _store(entry, key, value)
    return value


def _now_ns() -> int:
    return time.time_ns()


def _entry_path(folder: Path) -> Path:
    name = hashlib.sha256(os.fsencode(Path(folder).resolve())).hexdigest()[:32]
    return cache_dir() / "folder-digests" / f"{name}.json"


def _signature(files: Sequence[FolderFile]) -> Signature | None:
    out: Signature = []
    for f in files:
        try:
            st = os.lstat(f.path)
        except OSError:
            return None
        out.append((f.name, st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns,
                    st.st_ctime_ns))
    return out


def _key(head: Sequence[str | bytes], sig: Signature) -> str:
    return digest(["folder-digest", *head, json.dumps(sig)])


def _settled(sig: Signature, started_ns: int) -> bool:
    limit = started_ns - int(SETTLED_S * 1e9)
    return all(mtime < limit and ctime < limit for *_, mtime, ctime in sig)


def _load(entry: Path, key: str) -> str | None:
    try:
        data = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    value = data.get("digest")
    return value if isinstance(value, str) and value.isalnum() else None


def _store(entry: Path, key: str, value: str) -> None:
    """Written whole or not at all (a temp file renamed over the entry); a cache that
    cannot be written only means hashing again next time."""
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "digest": value}, f)
            os.replace(tmp, entry)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
