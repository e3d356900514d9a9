"""The sandbox runtime: parses and conforms the bytes of the user's connector.

Runs INSIDE the sandbox (a child process or a container), never in the worker, in the
project's own environment (pyarrow, fastavro, pydantic). The user's code runs in a
second process under the user's interpreter (see worker/runtime/userproc.py): this one
asks it for listings, bytes and custom-parser rows. It talks to the host only through
frames on its original stdin/stdout, or on the session socket the host names with
`--connect` (see worker.protocol, worker/sandbox/links.py); its stderr and both processes'
prints are redirected into a pipe that a thread forwards as `log` frames, so nothing the
user writes can corrupt a frame. When the host's end of that link closes (the host ended
the session, or died), every process under the runtime ends, and the runtime with them
(worker/runtime/warden.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pyarrow as pa

from worker.errors import FailureKind
from worker.protocol import JSON, FrameWriter, listing_batch, read_stream_frame
from worker.runtime import limits
from worker.runtime.conform import Conformer, DataError
from worker.runtime.formats import ParseError, RowColumns, columns_to_batch, parse_into
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.runtime.userproc import UserError, UserProcess
from worker.runtime.warden import become_subreaper, end_descendants, watch_host
from worker.spec import ParserSpec, Schema

SEND_BUFFER = 4 << 20


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def emit_rows(row_batches: Iterator[RowColumns],
              emit: Callable[[pa.RecordBatch], None], mixed_as_text: bool = False) -> None:
    """parser_function's rows, batch by batch, as Arrow record batches (see
    `columns_to_batch` for `mixed_as_text`)."""
    first = 1
    for rows in row_batches:
        batch = columns_to_batch(rows, first, mixed_as_text)
        first += rows.rows
        del rows  # the Python values go before Arrow's copy moves on
        emit(batch)


class LogPump:
    """Moves fd 1 and fd 2 into a pipe and forwards what arrives as `log` frames.

    `sync()` returns once everything written so far has been forwarded: a random marker
    goes through the pipe, so a fragment's log is complete before its `done` frame.
    """

    def __init__(self, writer: FrameWriter, lock: threading.Lock) -> None:
        self._writer, self._lock = writer, lock
        self._marker = b"\x00sync-" + secrets.token_hex(8).encode() + b"\x00"
        self._synced = threading.Event()
        r, w = os.pipe()
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        text = {"buffering": 1, "encoding": "utf-8", "errors": "replace", "closefd": False}
        sys.stdout = open(1, "w", **text)  # noqa: SIM115 - lives as long as the process
        sys.stderr = open(2, "w", **text)  # noqa: SIM115
        self._r = r
        threading.Thread(target=self._run, name="log-pump", daemon=True).start()

    def _emit(self, data: bytes) -> None:
        if data:
            with self._lock:
                self._writer.send("log", text=data.decode("utf-8", "replace"))

    def _run(self) -> None:
        pending = b""
        while True:
            data = os.read(self._r, 65536)
            if not data:
                return
            pending += data
            while (i := pending.find(self._marker)) >= 0:
                self._emit(pending[:i])
                pending = pending[i + len(self._marker):]
                self._synced.set()
            # Keep a possible partial marker at the tail for the next read.
            keep = len(self._marker) - 1
            self._emit(pending[:-keep] if len(pending) > keep else b"")
            pending = pending[-keep:] if len(pending) > keep else pending

    def sync(self) -> None:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the user may have closed or replaced it
                f.flush()
        self._synced.clear()
        os.write(1, self._marker)
        self._synced.wait(timeout=5)


class Runtime:
    def __init__(self, proto_in: BinaryIO, proto_out: BinaryIO, user_python: str) -> None:
        self._in = proto_in
        self._user_python = user_python
        self._user: UserProcess | None = None
        self._lock = threading.Lock()
        self._w = FrameWriter(proto_out)
        self._logs = LogPump(self._w, self._lock)
        self._parser = ParserSpec()
        self._schema = Schema()

    def send(self, op: str, **fields: Any) -> None:
        with self._lock:
            self._w.send(op, **fields)

    # --- ops -----------------------------------------------------------------------

    def op_open(self, msg: dict[str, Any]) -> None:
        self._parser = ParserSpec.model_validate(msg.get("parser") or {})
        self._schema = Schema.model_validate(msg.get("schema") or {})
        self._user = UserProcess(self._user_python)
        self._user.open(msg["module_dir"], msg.get("credentials"), msg.get("display_dir"))
        self.send("ready")

    def op_list(self, _: dict[str, Any]) -> None:
        assert self._user is not None
        count = 0
        for objects in self._user.list():
            count += len(objects)
            self._send_listed(objects)
        self._logs.sync()
        self.send("done", count=count)

    def _send_listed(self, objects: list[dict[str, Any]]) -> None:
        batch = listing_batch(objects)
        with self._lock:
            self._w.send_batch(batch)

    def op_read(self, msg: dict[str, Any]) -> None:
        assert self._user is not None
        fragment = msg["fragment"]
        name = fragment.get("name")
        log = RowRejects(name, self._schema, self._parser)
        conformer = Conformer(self._schema, name, log)

        def emit(batch: pa.RecordBatch) -> None:
            out = conformer.conform(batch)
            if out.num_rows:
                with self._lock:
                    self._w.send_batch(out)

        if self._parser.format == "custom":
            row_batches = self._user.read_rows(fragment, self._parser)
            try:
                # A declared schema casts each column: a column of mixed types goes to
                # it as text, so only the values that do not convert are rejected.
                emit_rows(row_batches, emit, mixed_as_text=bool(self._schema.columns))
            finally:
                row_batches.close()  # stops the user's parser if we failed first
        else:
            chunks = self._user.read_bytes(fragment)
            stream = ChunkStream(chunks)
            try:
                parse_into(stream, self._parser, None, emit, rejects=log)
            except (ParseError, DataError):
                if stream.error is not None:
                    self._raise_user(name, stream.error)
                raise
            except MemoryError:
                raise
            except BaseException as e:
                self._raise_user(name, stream.error or e)
            finally:
                chunks.close()  # stops read_bytes if the parser stopped before its end
        conformer.finish()
        self._w.flush()
        self._logs.sync()
        self.send("done", rows=log.written, read=log.read, rejected=log.rejected,
                  defaulted=log.defaulted, warnings=log.warnings,
                  rejects=[r.to_wire() for r in log.records])

    def _raise_user(self, name: str, e: BaseException) -> None:
        if isinstance(e, UserError):
            raise e
        # A parser failed in a way of its own on the user's bytes: theirs to look at.
        raise UserError(f"read_bytes({name!r}): parsing failed: {_describe(e)}") from None

    # --- loop ----------------------------------------------------------------------

    def serve(self) -> int:
        ops = {"open": self.op_open, "list": self.op_list, "read": self.op_read}
        while True:
            frame = read_stream_frame(self._in)
            if frame is None:
                return 0
            kind, body = frame
            if kind != JSON:
                self.send("error", kind=FailureKind.INFRA, message="runtime got a non-JSON frame")
                return 2
            msg = json.loads(body)
            op = msg.get("op")
            if op == "close":
                if self._user is not None:
                    self._user.close()
                return 0
            handler = ops.get(op)
            try:
                if handler is None:
                    raise RuntimeError(f"unknown op {op!r}")
                handler(msg)
            except UserError as e:
                self._fail(FailureKind(e.kind), str(e), e.tb)
                if op == "open" or e.fatal:
                    return 1
            except (ParseError, DataError) as e:
                self._fail(FailureKind.DATA, str(e), "")
            except MemoryError:
                self._fail(FailureKind.LIMIT, "out of memory", "")
                return 1
            except BaseException as e:  # a runtime bug: report it rather than die silently
                self._fail(FailureKind.INFRA, f"runtime error: {_describe(e)}",
                           traceback.format_exc())
                return 2

    def _fail(self, kind: FailureKind, message: str, tb: str) -> None:
        self._logs.sync()
        self.send("error", kind=kind, message=message, traceback=tb)


def protocol_fds(connect: str | None) -> tuple[int, int]:
    """(input, output) descriptors of the protocol: private copies of stdin and stdout
    (made before fd 1 is handed to the log pump), or a connection to the host's session
    socket. Connecting comes before the user's process starts, so the host's one
    accepted connection is always this one. Both are close-on-exec: the user process
    never inherits them."""
    if connect is None:
        return os.dup(0), os.dup(1)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # a bigger send queue: fewer wake-ups per MiB of Arrow (capped by the kernel)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.connect(connect)
    except OSError:
        sock.close()
        raise
    fd = sock.detach()
    return os.dup(fd), fd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m worker.runtime")
    ap.add_argument("--user-python", required=True,
                    help="the interpreter of the user's environment, for the user process")
    ap.add_argument("--cpus", type=int, default=1, help="the sandbox's CPU limit")
    ap.add_argument("--connect", metavar="SOCKET",
                    help="frames over this unix socket instead of stdin/stdout")
    args = ap.parse_args(argv)
    limits.apply(args.cpus)
    try:
        in_fd, out_fd = protocol_fds(args.connect)
    except OSError as e:
        print(f"runtime: cannot connect to the session socket {args.connect}: {e}",
              file=sys.stderr)
        return 2
    # before the user process starts: nothing it starts may outlive this process or the
    # host (worker/runtime/warden.py)
    become_subreaper()
    watch_host(in_fd, out_fd)
    proto_out = os.fdopen(out_fd, "wb", buffering=1 << 20)
    proto_in = os.fdopen(in_fd, "rb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code reading stdin must not eat frames
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    try:
        code = Runtime(proto_in, proto_out, args.user_python).serve()
    finally:
        end_descendants()
    proto_out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
