"""A connector folder as a reproducible, content-hashed tar.gz, and back.

The archive is deterministic (sorted names, zeroed owners and times), so the same
folder always hashes the same: the hash is the deployed version's identity and the
worker's cache key. The credentials file is never packed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from worker.errors import ConfigError

MAX_BUNDLE_BYTES = 64 << 20
SKIP_DIRS = {"__pycache__", ".git", ".venv", ".pytest_cache", "node_modules"}


class BundleError(ConfigError):
    """A bundle cannot be packed or does not unpack to what was deployed."""


def _files(folder: Path, exclude: set[Path]) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for n in sorted(names):
            p = Path(root) / n
            if n.endswith(".pyc") or p.resolve() in exclude or p.is_symlink():
                continue
            out.append(p)
    return out


def make_bundle(folder: Path, exclude: list[Path] | None = None) -> tuple[bytes, str]:
    """(tar.gz bytes, sha256 hex) of `folder` without the `exclude` files."""
    folder = folder.resolve()
    skip = {p.resolve() for p in exclude or []}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in _files(folder, skip):
            data = p.read_bytes()
            info = tarfile.TarInfo(p.relative_to(folder).as_posix())
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    if len(packed) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{folder}: bundle is {len(packed)} bytes, over the "
                          f"{MAX_BUNDLE_BYTES} byte limit")
    return packed, hashlib.sha256(packed).hexdigest()


def unpack_bundle(data: bytes, digest: str, cache: Path) -> Path:
    """The bundle unpacked under `cache/<digest>` (once; later calls reuse it)."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"bundle {digest[:12]} does not match its hash")
    dest = cache / digest
    if dest.is_dir():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=cache))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(dest)
        except OSError:  # another worker on this host unpacked it first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
