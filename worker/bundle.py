"""A connector folder as a reproducible, content-hashed tar.gz, and back.

The archive is deterministic (sorted names, zeroed owners and times), so the same
folder always hashes the same: the hash is the deployed version's identity and the
worker's cache key. The credentials file is never packed. The folder is read with
`worker.folder.walk_folder`, so a link or special file refuses the deploy.

A bundle is bounded three ways, on packing and again on unpacking (a bundle in Redis may
have been written by any client): compressed bytes, unpacked bytes and file count. On
unpacking the tar stream is read through a counter, so a bundle that decompresses to far
more than it declares is stopped at the limit, before the disk or memory fills; and only
regular files and directories are extracted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from worker.errors import ConfigError
from worker.folder import FolderError, walk_folder

MAX_BUNDLE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 256 << 20
MAX_FILES = 10_000

# Tar's own bytes around the files: a header (and a PAX header) per member, end blocks.
_TAR_OVERHEAD_PER_MEMBER = 4 * tarfile.BLOCKSIZE
_TAR_OVERHEAD = 2 * tarfile.RECORDSIZE


class BundleError(ConfigError):
    """A bundle cannot be packed or does not unpack to what was deployed."""


def make_bundle(folder: Path, exclude: list[Path] | None = None) -> tuple[bytes, str]:
    """(tar.gz bytes, sha256 hex) of `folder` without the `exclude` files."""
    folder = folder.resolve()
    try:
        files = walk_folder(folder, exclude or [], max_files=MAX_FILES,
                            max_bytes=MAX_UNPACKED_BYTES)
    except FolderError as e:
        raise BundleError(str(e)) from None
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            data = f.read_bytes()
            info = tarfile.TarInfo(f.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    if len(packed) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{folder}: bundle is {len(packed)} bytes, over the "
                          f"{MAX_BUNDLE_BYTES} byte limit")
    return packed, hashlib.sha256(packed).hexdigest()


class _Capped(io.RawIOBase):
    """Reads `inner` and raises BundleError once more than `limit` bytes came out of it."""

    def __init__(self, inner: io.BufferedIOBase, limit: int, what: str) -> None:
        self.inner, self.limit, self.what, self.read_so_far = inner, limit, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise BundleError(f"{self.what} unpacks to more than {MAX_UNPACKED_BYTES} "
                              "bytes (the limit)")
        b[:len(data)] = data
        return len(data)


def _checked(tar: tarfile.TarFile, what: str) -> Iterator[tarfile.TarInfo]:
    """The members of a streamed tar, refusing links, devices and anything over the limits
    before it is written."""
    total = 0
    for files, m in enumerate(tar, start=1):
        if not (m.isreg() or m.isdir()):
            raise BundleError(f"{what}: {m.name}: not a regular file (bundles hold regular "
                              "files only)")
        total += m.size
        if files > MAX_FILES:
            raise BundleError(f"{what} holds more than {MAX_FILES} files (the limit)")
        if total > MAX_UNPACKED_BYTES:
            raise BundleError(f"{what} unpacks to more than {MAX_UNPACKED_BYTES} bytes "
                              "(the limit)")
        yield m


def unpack_bundle(data: bytes, digest: str, cache: Path) -> Path:
    """The bundle unpacked under `cache/<digest>` (once; later calls reuse it)."""
    what = f"bundle {digest[:12]}"
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"{what} does not match its hash")
    dest = cache / digest
    if dest.is_dir():
        return dest
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{what} is {len(data)} bytes, over the {MAX_BUNDLE_BYTES} "
                          "byte limit")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=cache))
    cap = MAX_UNPACKED_BYTES + MAX_FILES * _TAR_OVERHEAD_PER_MEMBER + _TAR_OVERHEAD
    try:
        stream = _Capped(gzip.GzipFile(fileobj=io.BytesIO(data)), cap, what)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(tmp, members=_checked(tar, what), filter="data")
        except (tarfile.TarError, gzip.BadGzipFile, EOFError) as e:
            raise BundleError(f"{what} cannot be unpacked: {e}") from None
        try:
            tmp.rename(dest)
        except OSError:  # another worker on this host unpacked it first
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
