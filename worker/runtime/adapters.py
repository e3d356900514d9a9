"""File-like adapters over a fragment's byte stream, shared by the parsers.

`CommentFilter` drops comment lines, `Prefixed` puts back bytes already read, and
`utf8_chunks` re-encodes any text encoding to UTF-8; each works chunk by chunk, so a
fragment is never held whole.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator

BLOCK_SIZE = 4 << 20  # bytes per CSV/JSON block handed to pyarrow


class CommentFilter(io.RawIOBase):
    """Drops lines that start with `comment`, chunk by chunk (bytes level)."""

    def __init__(self, raw: io.RawIOBase, comment: bytes) -> None:
        self._raw = raw
        self._comment = comment
        self._nl_comment = b"\n" + comment
        self._carry = b""  # an incomplete last line
        self._out = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _filter(self, data: bytes) -> bytes:
        if not data.startswith(self._comment) and self._nl_comment not in data:
            return data
        c = self._comment
        return b"".join(line for line in data.splitlines(keepends=True)
                        if not line.startswith(c))

    def _fill(self) -> bool:
        while not self._out:
            if self._eof:
                return False
            chunk = self._raw.read(BLOCK_SIZE)
            if not chunk:
                self._eof = True
                data, self._carry = self._carry, b""
            else:
                data = self._carry + chunk
                cut = data.rfind(b"\n") + 1
                data, self._carry = data[:cut], data[cut:]
            self._out = memoryview(self._filter(data))
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._fill():
            return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


class Prefixed(io.RawIOBase):
    """`head` bytes followed by the rest of a raw stream."""

    def __init__(self, head: bytes, rest: io.BufferedIOBase) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read1(len(b))
        n = len(data)
        b[:n] = data
        return n


def utf8_chunks(stream: io.RawIOBase, encoding: str) -> Iterator[bytes]:
    """The stream's bytes as UTF-8 (pyarrow's JSON reader takes nothing else)."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    decoder = None if utf8 else codecs.getincrementaldecoder(encoding)()
    while True:
        chunk = stream.read(BLOCK_SIZE)
        if decoder is None:
            if not chunk:
                return
            yield chunk
            continue
        if not chunk:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail.encode("utf-8")
            return
        yield decoder.decode(chunk).encode("utf-8")

