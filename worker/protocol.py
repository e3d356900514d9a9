"""The framed protocol between host and sandbox runtime.

One frame = 1 byte kind + 4 bytes big-endian length + payload. Kind `J` carries a JSON
control object (`{"op": ...}`), kind `A` one Arrow record batch as a self-contained IPC
stream. The same bytes cross the runtime's stdin/stdout pipes (process sandbox), the
session's unix socket or the container's attach stream (Docker sandbox,
worker/sandbox/links.py); the runtime moves user `print` output off stdout so it cannot
corrupt a frame.

Host -> runtime ops: open, list, read, close.
Runtime -> host ops: ready, listed, done, log, error (+ `A` frames while reading).
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO, Protocol

import pyarrow as pa

from worker.arrays import strings
from worker.errors import ConnectorError, FailureKind

JSON = b"J"
ARROW = b"A"
HEADER = struct.Struct(">cI")
MAX_FRAME = 512 << 20  # one batch bigger than this is a runtime bug, not data


class ProtocolError(ConnectorError):
    """The other side sent something that is not a frame: the session is unusable.
    User code can write to the protocol's descriptor, so this is the user's failure."""

    kind = FailureKind.USER


class ByteSource(Protocol):
    """Where the host reads the runtime's stdout from (a pipe or a container socket)."""

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        """Exactly n bytes; raises TimeoutError past `deadline` (monotonic) or EOFError."""
        ...


def encode_json(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return HEADER.pack(JSON, len(body)) + body


def _ipc_body(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue()


def encode_batch(batch: pa.RecordBatch) -> bytes:
    body = _ipc_body(batch)
    return HEADER.pack(ARROW, body.size) + memoryview(body)


class FrameWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def send(self, op: str, **fields: Any) -> None:
        self._out.write(encode_json({"op": op, **fields}))
        self._out.flush()

    def send_batch(self, batch: pa.RecordBatch) -> None:
        # No copy of the body: the 5-byte header lands in the writer's buffer and the
        # Arrow buffer (megabytes) is written straight from pyarrow's memory.
        body = _ipc_body(batch)
        self._out.write(HEADER.pack(ARROW, body.size))
        self._out.write(memoryview(body))

    def flush(self) -> None:
        self._out.flush()


class FrameTooLarge(ConnectorError):
    """A header announced more bytes than the reader may take: refused before buffering,
    since user code can forge headers by writing to the protocol's descriptor."""

    kind = FailureKind.LIMIT

    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes is over the limit")
        self.size = size


def read_header(src: ByteSource, deadline: float | None) -> tuple[bytes, int]:
    """The next frame's kind and size; ProtocolError if it is no frame header."""
    head = src.read_exact(HEADER.size, deadline)
    kind, size = HEADER.unpack(head)
    if kind not in (JSON, ARROW) or size > MAX_FRAME:
        raise ProtocolError(f"bad frame header {bytes(head)!r}")
    return kind, size


def read_frame(src: ByteSource, deadline: float | None,
               max_size: int = MAX_FRAME) -> tuple[bytes, bytes]:
    kind, size = read_header(src, deadline)
    if size > max_size:
        raise FrameTooLarge(size)
    return kind, src.read_exact(size, deadline)


def read_stream_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """Runtime side: blocking read from stdin; None at EOF."""
    head = stream.read(HEADER.size)
    if not head:
        return None
    if len(head) != HEADER.size:
        raise ProtocolError("truncated frame header")
    kind, size = HEADER.unpack(head)
    body = stream.read(size)
    if len(body) != size:
        raise ProtocolError("truncated frame body")
    return kind, body


# A listing crosses as Arrow, 2,000 fragments a batch: at 100,000 fragments a JSON
# object and a model per fragment cost several times the user's own listing.
# `extra` holds any keys beyond name/fingerprint/is_prefix, as JSON, for read_bytes.
LISTING_SCHEMA = pa.schema([
    pa.field("name", pa.string(), nullable=False),
    pa.field("fingerprint", pa.string(), nullable=False),
    pa.field("extra", pa.string()),
])
STANDARD_KEYS = frozenset(("name", "fingerprint", "is_prefix"))


def listing_batch(objects: list[dict[str, Any]]) -> pa.RecordBatch:
    extras = [
        None if o.keys() <= STANDARD_KEYS else json.dumps(
            {k: v for k, v in o.items() if k not in STANDARD_KEYS}, default=str)
        for o in objects
    ]
    return pa.record_batch([
        strings([o["name"] for o in objects]),
        strings([o["fingerprint"] for o in objects]),
        strings(extras),
    ], schema=LISTING_SCHEMA)
