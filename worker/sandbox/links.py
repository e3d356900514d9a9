"""How frames cross between the host and a container's runtime: the `Link` seam.

`SocketLink` (the default): frames go both ways over the session's private unix socket
(session_socket.py), straight between the runtime and this process; the engine's attach
stream carries only the runtime's stderr (for the exit reason). Output never passes
through containerd-shim, its FIFO and dockerd's copy into the attach stream: on the
bench that path cost as much CPU per row again as the runtime's own parse, on a box
whose two cores the parse already fills.

`AttachLink`: frames ride the container's stdin and the attached, multiplexed stdout.
For engines that cannot hand the container a host socket: gVisor (runsc) does not
connect host unix sockets by default, and a remote engine does not see this host's
files.

Either way the host never buffers more of the runtime's output than the read-ahead's
bound (`ReadAhead`): user code can reach the protocol's bytes, and a forged header
announcing a 500 MiB frame must not make the worker hold 500 MiB before the cap is
checked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Protocol

from worker.protocol import ByteSource
from worker.sandbox.readahead import CHUNK, ReadAhead

STDERR_CAP = 64 << 10
_MUX = struct.Struct(">BxxxL")
# How long exit_reason waits for the rest of the attach stream's stderr once the
# container has exited (the engine closes the stream right after).
STDERR_DRAIN_S = 2.0


def _eof() -> bytes:
    raise EOFError


class Link(Protocol):
    """Bytes to and from one container's runtime."""

    source: ByteSource

    def send(self, data: bytes) -> None:
        """To the runtime's protocol input; raises OSError if it is gone."""
        ...

    def stderr(self) -> bytes:
        """The runtime's stderr so far (bounded), for the exit reason."""
        ...

    def close(self) -> None:
        """Stop reading and drop the connection (the container is being removed)."""
        ...


class DockerDemux:
    """Undoes Docker's stream multiplexing (8-byte headers) of an attached container
    socket: `recv()` returns the stdout bytes of one read (for `ReadAhead`), stderr is
    kept, bounded, for the exit reason."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._raw = b""  # undemuxed bytes: a partial mux header or payload
        self.stderr = bytearray()

    def recv(self) -> bytes:
        data = self._sock.recv(1 << 20)
        if not data:
            raise EOFError
        raw = self._raw + data if self._raw else data
        view = memoryview(raw)
        pos = 0
        out: list[memoryview] = []
        while len(raw) - pos >= 8:
            kind, size = _MUX.unpack_from(raw, pos)
            if len(raw) - pos - 8 < size:
                break
            payload = view[pos + 8: pos + 8 + size]
            pos += 8 + size
            if kind == 1:
                out.append(payload)
            elif kind == 2 and len(self.stderr) < STDERR_CAP:
                self.stderr += payload[: STDERR_CAP - len(self.stderr)]
        self._raw = raw[pos:]
        return b"".join(out)


def _shut(sock: socket.socket) -> None:
    # shutdown() first: close() alone leaves the connection open while the SDK's SocketIO
    # still references the socket, and then a runtime that is writing (an output flood)
    # blocks the engine's attach copy, which blocks the container's removal forever.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class AttachLink:
    """Frames over the attach stream: stdin in, multiplexed stdout (and stderr) out."""

    def __init__(self, attach: socket.socket) -> None:
        self._sock = attach
        self._demux = DockerDemux(attach)
        self.source = ReadAhead(self._demux.recv, attach, name="container-stdout")

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def stderr(self) -> bytes:
        return bytes(self._demux.stderr)

    def close(self) -> None:
        self.source.close()
        _shut(self._sock)


class SocketLink:
    """Frames over the session socket `conn`; the attach stream (stderr only) is drained
    by a thread of its own, which also tells when the container ended (`ended`)."""

    def __init__(self, attach: socket.socket) -> None:
        self._attach = attach
        self._demux = DockerDemux(attach)
        self.ended = threading.Event()
        self._drain = threading.Thread(target=self._drain_stderr, name="container-stderr",
                                       daemon=True)
        self._drain.start()
        self._conn: socket.socket | None = None

    def connected(self, conn: socket.socket) -> None:
        """The runtime connected: frames flow over `conn` from now on."""
        self._conn = conn
        self.source = ReadAhead(lambda: conn.recv(CHUNK) or _eof(), conn,
                                name="container-socket")

    def _drain_stderr(self) -> None:
        try:
            while True:
                self._demux.recv()  # stdout is not attached: only stderr arrives
        except (EOFError, OSError):
            pass
        finally:
            self.ended.set()

    def send(self, data: bytes) -> None:
        if self._conn is None:
            raise BrokenPipeError("the runtime never connected")
        self._conn.sendall(data)

    def stderr(self) -> bytes:
        self._drain.join(STDERR_DRAIN_S)
        return bytes(self._demux.stderr)

    def close(self) -> None:
        if self._conn is not None:
            self.source.close()
            _shut(self._conn)
        _shut(self._attach)
