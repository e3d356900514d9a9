"""Hand-made deploy bundles, as a tenant could write them to Redis with its own client."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile


class Zeros(io.RawIOBase):
    """`n` zero bytes, produced as they are read (a member of any size costs no memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - a writable buffer
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def tar_gz(members: list[tuple[str, bytes | int]]) -> tuple[bytes, str]:
    """(tar.gz bytes, sha256 hex) of files given as bytes, or as a size of zeros."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, int):
                info.size = content
                tar.addfile(info, Zeros(content))
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    return data, hashlib.sha256(data).hexdigest()
