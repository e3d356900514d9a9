"""File-like adapters over a fragment's byte stream, shared by the parsers.

`LineFilter` drops comment lines (and maps line numbers), `Prefixed` puts back bytes
already read, and `utf8_chunks` re-encodes any text encoding to UTF-8; each works
chunk by chunk, so a fragment is never held whole.
"""

from __future__ import annotations

import bisect
import codecs
import io
from collections.abc import Iterator

BLOCK_SIZE = 4 << 20  # bytes per CSV/JSON block handed to pyarrow


class LineFilter(io.RawIOBase):
    """Drops lines that start with `comment` (when given), chunk by chunk (bytes level),
    and keeps the map from a CSV reader's line numbers, which count neither empty lines
    nor dropped ones, back to the file's own (`physical`)."""

    def __init__(self, raw: io.RawIOBase, comment: bytes | None) -> None:
        self._raw = raw
        self._comment = comment
        self._carry = b""  # an incomplete last line
        self._out = memoryview(b"")
        self._eof = False
        self._counted = 0  # lines passed on that a reader counts (not empty)
        self._skipped: list[int] = []  # per uncounted line: counted lines before it

    def readable(self) -> bool:
        return True

    def physical(self, counted: int) -> int:
        """The file's line number of the `counted`-th counted line (1-based)."""
        return counted + bisect.bisect_right(self._skipped, counted - 1)

    def _filter(self, data: bytes) -> bytes:
        c = self._comment
        comments = c is not None and (data.startswith(c) or b"\n" + c in data)
        empties = (data[:1] == b"\n" or data[:2] == b"\r\n" or b"\n\n" in data
                   or b"\n\r\n" in data)
        if not comments and not empties:  # the common case: no line-by-line pass
            self._counted += data.count(b"\n") + (1 if data[-1:] not in (b"\n", b"") else 0)
            return data
        parts = data.split(b"\n")
        last = len(parts) - 1
        out: list[bytes] = []
        for i, line in enumerate(parts):
            if i == last and not line:
                break
            nl = b"\n" if i < last else b""
            if c is not None and line.startswith(c):
                self._skipped.append(self._counted)
                continue
            if not line or line == b"\r":
                self._skipped.append(self._counted)  # the reader skips it, uncounted
            else:
                self._counted += 1
            out.append(line + nl)
        return b"".join(out)

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

