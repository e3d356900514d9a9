"""Read-ahead of a runtime's output: a thread drains the transport into a bounded buffer.

A refresh lane reads one fragment's frames and writes its Parquet row groups in the
same thread. While it encodes a row group (tens of milliseconds) nobody would read the
runtime's output, and the runtime, whose pipe holds 64 KiB (~700 rows), would block in
its write instead of parsing on: parse and write would alternate instead of overlapping.
`ReadAhead` keeps reading while the consumer is busy, up to `limit` bytes, and serves
`read_exact` from what it has gathered.

It moves bytes only: frames, deadlines and the output cap stay with the consumer
(`read_frame` over `read_exact`), so a flood, a forged header or a hung runtime fail
exactly as they would on the bare transport; the bound keeps the host's memory flat
(at most `limit` plus one read per session), whatever the runtime sends.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from collections.abc import Callable

# Bytes read ahead per session: more than one row group's worth of Arrow batches
# (128 Ki rows of the 8-column bench table is ~11 MiB), so a whole write overlaps.
READ_AHEAD_BYTES = 16 << 20
# Bytes asked of the transport per read.
CHUNK = 1 << 20
# How often the reading thread looks up from an idle transport to see if it was closed.
POLL_S = 0.5


def _eof() -> bytes:
    raise EOFError


class ReadAhead:
    """`ByteSource` over `read`, called in a thread of its own whenever `readable` is.

    `read()` returns the bytes that arrived (possibly none, e.g. only a header of the
    transport's own) and raises EOFError at the end or OSError when the transport
    failed; either is raised to the consumer once the bytes before it are consumed.
    `close()` stops the thread (within POLL_S if the transport is idle).
    """

    def __init__(self, read: Callable[[], bytes], readable: int | socket.socket,
                 limit: int = READ_AHEAD_BYTES, name: str = "read-ahead",
                 on_exit: Callable[[], None] | None = None) -> None:
        self._read = read
        self._on_exit = on_exit
        self._readable = readable
        self._limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pos = 0  # consumed bytes of self._chunks[0]
        self._avail = 0
        self._end: BaseException | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- the reading thread ----------------------------------------------------------

    @classmethod
    def over_fd(cls, fd: int, name: str = "read-ahead") -> ReadAhead:
        """Over a pipe: the thread reads its own duplicate of `fd` and closes it when it
        ends, so closing `fd` meanwhile can never make it read a reused descriptor."""
        own = os.dup(fd)
        return cls(lambda: os.read(own, CHUNK) or _eof(), own, name=name,
                   on_exit=lambda: os.close(own))

    def _run(self) -> None:
        cond = self._cond
        try:
            while True:
                with cond:
                    while self._avail >= self._limit and not self._closed:
                        cond.wait()
                    if self._closed:
                        return
                ready, _, _ = select.select([self._readable], [], [], POLL_S)
                if not ready:
                    continue
                data = self._read()
                if data:
                    with cond:
                        self._chunks.append(data)
                        self._avail += len(data)
                        cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - EOF or a failed transport: the consumer's
            with cond:
                self._end = e
                cond.notify_all()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    # --- the consumer ------------------------------------------------------------------

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        """Exactly n bytes; TimeoutError past `deadline` (monotonic), EOFError or the
        transport's OSError once what came before it is consumed."""
        cond = self._cond
        with cond:
            chunks = self._chunks
            if chunks and len(chunks[0]) - self._pos >= n:
                return self._take_head(n)
            out = bytearray(n)
            got = 0
            while True:
                while chunks and got < n:
                    head = chunks[0]
                    take = min(len(head) - self._pos, n - got)
                    out[got:got + take] = memoryview(head)[self._pos:self._pos + take]
                    got += take
                    self._consumed(take)
                cond.notify_all()  # room for the reading thread
                if got == n:
                    return out  # a bytearray: bytes-like, and no second copy
                if self._end is not None:
                    raise self._end.with_traceback(None)
                if self._closed:
                    raise EOFError
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError
                cond.wait(wait)

    def _take_head(self, n: int) -> bytes:
        head, pos = self._chunks[0], self._pos
        data = head[pos:pos + n]
        self._consumed(n)
        if self._avail < self._limit:
            self._cond.notify_all()
        return data

    def _consumed(self, n: int) -> None:
        self._pos += n
        self._avail -= n
        if self._pos == len(self._chunks[0]):
            self._chunks.popleft()
            self._pos = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._avail = self._pos = 0
            self._cond.notify_all()
