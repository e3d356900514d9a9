"""The runtime's output is read ahead while the host is busy writing, within a bound."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.models import Fragment
from worker.sandbox.process import ProcessSandbox
from worker.sandbox.readahead import CHUNK, ReadAhead
from worker.spec import load_connector

# ~110,000 rows, ~8 MiB of Arrow: far more than a pipe holds, less than the read-ahead.
# A custom parser pushes its rows synchronously, so its last line runs only once the
# runtime has sent every batch before it.
BIG_CODE = """
import pathlib

def list_objects(context, metadata):
    yield {"name": "big", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield metadata["marker"] + "\\n"

def parser_function(reader, onNext):
    marker = next(reader).rstrip("\\n")
    text = "x" * 60
    for i in range(110_000):
        onNext({"id": i, "text": text})
    pathlib.Path(marker).write_text("done")
"""
BIG_SPEC = """
name: big
parser: {format: custom, reader: text}
schema:
  - {name: id, type: int64}
  - {name: text, type: string}
"""


def _eventually(cond: Callable[[], bool], timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_runtime_finishes_a_fragment_while_the_host_has_not_read_it(
        connector: Callable[..., Path], tmp_path: Path) -> None:
    conn = load_connector(connector(BIG_CODE, BIG_SPEC))
    marker = tmp_path / "marker"
    session = ProcessSandbox().open(conn, None)
    try:
        fragment = Fragment(name="big", fingerprint="1", marker=str(marker))
        reads = session.read_many([fragment])
        _, stream = next(reads)
        assert stream is not None
        # Nobody reads yet (the host would be writing a row group): the runtime must
        # not be stuck on a full pipe after ~700 rows.
        assert _eventually(marker.exists), "the runtime blocked while the host was busy"
        rows = sum(b.num_rows for b in stream)
        assert rows == 110_000
        assert stream.report is not None and stream.report.rows == 110_000
        assert next(reads, None) is None
        assert session.usable
    finally:
        session.close()


class _Endless:
    """A transport that always has 64 KiB more, counting what was taken from it."""

    def __init__(self) -> None:
        self.taken = 0
        self._r, self._w = os.pipe()
        os.write(self._w, b"x")  # always readable

    def read(self) -> bytes:
        self.taken += 1 << 16
        return bytes(1 << 16)

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def test_read_ahead_stops_at_its_bound_and_resumes_when_consumed() -> None:
    t = _Endless()
    limit = 1 << 20
    src = ReadAhead(t.read, t._r, limit=limit)
    try:
        assert _eventually(lambda: t.taken >= limit)
        time.sleep(0.3)  # it would keep going here if it were unbounded
        assert t.taken <= limit + (1 << 16)
        assert len(src.read_exact(limit, time.monotonic() + 10)) == limit
        assert _eventually(lambda: t.taken >= 2 * limit)
    finally:
        src.close()
        t.close()


def test_bytes_in_order_then_the_end_of_the_stream() -> None:
    r, w = os.pipe()
    src = ReadAhead.over_fd(r)
    payload = os.urandom(3 * CHUNK + 12345)

    def write() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(payload)

    writer = threading.Thread(target=write)
    writer.start()
    got = bytearray()
    for n in (5, 1, CHUNK + 7, 100, 2 * CHUNK):
        got += src.read_exact(n, time.monotonic() + 30)
    got += src.read_exact(len(payload) - len(got), time.monotonic() + 30)
    writer.join()
    assert bytes(got) == payload
    with pytest.raises(EOFError):
        src.read_exact(1, time.monotonic() + 30)
    src.close()
    os.close(r)


def test_deadline_on_an_idle_transport() -> None:
    r, w = os.pipe()
    src = ReadAhead.over_fd(r)
    os.write(w, b"abc")
    with pytest.raises(TimeoutError):
        src.read_exact(4, time.monotonic() + 0.2)
    src.close()
    os.close(r)
    os.close(w)


def test_a_failed_transport_is_raised_after_the_bytes_before_it() -> None:
    r, w = os.pipe()
    os.write(w, b"x")
    calls = iter([b"hello", OSError(5, "boom")])

    def read() -> bytes:
        item = next(calls)
        if isinstance(item, BaseException):
            raise item
        return item

    src = ReadAhead(read, r)
    assert src.read_exact(5, time.monotonic() + 10) == b"hello"
    with pytest.raises(OSError, match="boom"):
        src.read_exact(1, time.monotonic() + 10)
    src.close()
    os.close(r)
    os.close(w)


def test_close_ends_the_reading_thread_and_its_descriptor() -> None:
    r, w = os.pipe()
    before = set(os.listdir("/proc/self/fd"))
    src = ReadAhead.over_fd(r, name="closing")
    src.close()
    assert _eventually(lambda: not any(t.name == "closing" for t in threading.enumerate()))
    assert set(os.listdir("/proc/self/fd")) <= before
    os.close(r)
    os.close(w)
