"""The byte stream of one fragment: read_bytes() chunks behind a non-seekable file."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator


class ChunkTypeError(TypeError):
    """read_bytes yielded something that is not bytes or str."""


class ChunkStream(io.RawIOBase):
    """Pulls chunks lazily, so a 2 GB fragment never sits in memory.

    An exception raised by the user's generator is kept in `error` as well as raised:
    parsers (pyarrow's C++ readers among them) may wrap or swallow it, and the runtime
    must still report the user's own traceback.
    """

    def __init__(self, chunks: Iterable[bytes | str]) -> None:
        self._it: Iterator[bytes | str] = iter(chunks)
        self._buf = memoryview(b"")
        self._chunk = b""  # the chunk `_buf` views, handed out whole when it fits a read
        self._index = 0
        self.bytes_read = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        while True:
            try:
                chunk = next(self._it)
            except StopIteration:
                return False
            except BaseException as e:
                self.error = e
                raise
            self._index += 1
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            elif isinstance(chunk, bytearray | memoryview):
                chunk = bytes(chunk)
            elif not isinstance(chunk, bytes):
                self.error = ChunkTypeError(
                    f"read_bytes yielded {type(chunk).__name__} as chunk {self._index}; "
                    "expected bytes or str"
                )
                raise self.error
            if chunk:
                self._chunk = chunk
                self._buf = memoryview(chunk)
                return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf and not self._next_chunk():
            return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.bytes_read += n
        return n

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        # Whole chunks when the caller takes any size: avoids a copy per small read.
        if size is None or size < 0:
            return self.readall()
        if not self._buf and not self._next_chunk():
            return b""
        if len(self._buf) <= size:
            # untouched chunk: the user's own bytes object, no copy
            out = self._chunk if len(self._buf) == len(self._chunk) else self._buf.tobytes()
            self._buf = memoryview(b"")
        else:
            out = self._buf[:size].tobytes()
            self._buf = self._buf[size:]
        self.bytes_read += len(out)
        return out
