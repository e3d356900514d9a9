"""The sandbox runtime: imports the user's module, runs it, parses and conforms its bytes.

Runs INSIDE the sandbox (a child process or a container), never in the worker. It talks
to the host only through frames on its original stdout (see worker.protocol); the
user's prints and the runtime's own stderr are redirected into a pipe that a thread
forwards as `log` frames, so nothing the user writes can corrupt a frame.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import pyarrow as pa

from worker.errors import FailureKind
from worker.protocol import JSON, FrameWriter, listing_batch, read_stream_frame
from worker.runtime.conform import Conformer, DataError
from worker.runtime.formats import ParseError, parse_into
from worker.runtime.rejects import RowRejects
from worker.runtime.stream import ChunkStream
from worker.spec import CODE_FILE, ParserSpec, Schema

LIST_CHUNK = 2000


class UserError(Exception):
    """The connector's code raised or broke the contract; carries the user's traceback."""

    def __init__(self, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.tb = tb


def _user_traceback(exc: BaseException, rename: tuple[str, str] | None = None) -> str:
    """The traceback as the user would want it: their frames, not the runtime's, and
    their files under the connector's own path (`rename`: sandbox folder -> that path)."""
    here = str(Path(__file__).resolve().parent.parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(here)]
    if rename is not None and rename[0] != rename[1]:
        inside, outside = rename[0].rstrip("/") + "/", rename[1].rstrip("/") + "/"
        for f in frames:
            if f.filename.startswith(inside):
                _ = f.line  # read the source line while its file is still at hand
                f.filename = outside + f.filename[len(inside):]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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
    def __init__(self, proto_in: BinaryIO, proto_out: BinaryIO) -> None:
        self._in = proto_in
        self._lock = threading.Lock()
        self._w = FrameWriter(proto_out)
        self._logs = LogPump(self._w, self._lock)
        self._module: ModuleType | None = None
        self._ctx: Any = None
        self._parser = ParserSpec()
        self._schema = Schema()
        self._rename: tuple[str, str] | None = None

    def _tb(self, e: BaseException) -> str:
        return _user_traceback(e, self._rename)

    def send(self, op: str, **fields: Any) -> None:
        with self._lock:
            self._w.send(op, **fields)

    # --- ops -----------------------------------------------------------------------

    def op_open(self, msg: dict[str, Any]) -> None:
        self._parser = ParserSpec.model_validate(msg.get("parser") or {})
        self._schema = Schema.model_validate(msg.get("schema") or {})
        folder = Path(msg["module_dir"])
        if msg.get("display_dir"):
            self._rename = (str(folder), str(msg["display_dir"]))
        sys.path.insert(0, str(folder))
        try:
            spec = importlib.util.spec_from_file_location("connector", folder / CODE_FILE)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules["connector"] = module
            spec.loader.exec_module(module)
        except BaseException as e:
            raise UserError(f"importing {CODE_FILE} failed: {_describe(e)}",
                            self._tb(e)) from None
        for fn in ("list_objects", "read_bytes"):
            if not callable(getattr(module, fn, None)):
                raise UserError(f"{CODE_FILE} does not define {fn}()")
        self._module = module
        ctx_fn = getattr(module, "context", None)
        credentials = msg.get("credentials")
        ctx: Any = {}
        if callable(ctx_fn):
            try:
                ctx = ctx_fn(credentials if credentials is not None else "")
            except BaseException as e:
                raise UserError(f"context() raised {_describe(e)}", self._tb(e)) from None
        self._ctx = ctx or {}
        self.send("ready")

    def _list(self, metadata: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
        assert self._module is not None
        try:
            it = iter(self._module.list_objects(self._ctx, metadata))
        except BaseException as e:
            raise UserError(f"list_objects({where}) raised {_describe(e)}",
                            self._tb(e)) from None
        i = 0
        while True:
            try:
                obj = next(it)
            except StopIteration:
                return
            except BaseException as e:
                raise UserError(f"list_objects({where}) raised {_describe(e)}",
                                self._tb(e)) from None
            i += 1
            if not isinstance(obj, dict):
                raise UserError(f"list_objects({where}) yielded {type(obj).__name__} as item "
                                f"{i}; expected a dict with name, fingerprint, is_prefix")
            for key in ("name", "fingerprint"):
                if not isinstance(obj.get(key), str):
                    raise UserError(
                        f"list_objects({where}) item {i} ({obj.get('name')!r}): '{key}' must "
                        f"be a string, got {type(obj.get(key)).__name__}")
                if not obj[key].isascii():
                    try:
                        obj[key].encode("utf-8")
                    except UnicodeEncodeError:
                        raise UserError(
                            f"list_objects({where}) item {i} ({obj.get('name')!r}): '{key}' "
                            "is not valid Unicode text (it holds a lone surrogate)") from None
            yield obj

    def op_list(self, _: dict[str, Any]) -> None:
        seen: set[str] = set()
        chunk: list[dict[str, Any]] = []
        # Depth-first expansion of prefixes, without recursion: listings can be deep.
        stack: list[Iterator[dict[str, Any]]] = [self._list({}, "{}")]
        while stack:
            obj = next(stack[-1], None)
            if obj is None:
                stack.pop()
                continue
            if obj.get("is_prefix"):
                stack.append(self._list(obj, repr(obj["name"])))
                continue
            if obj["name"] in seen:
                raise UserError(f"list_objects yielded the name {obj['name']!r} twice; "
                                "fragment names must be unique")
            seen.add(obj["name"])
            chunk.append(obj)
            if len(chunk) >= LIST_CHUNK:
                self._send_listed(chunk)
                chunk = []
        if chunk:
            self._send_listed(chunk)
        self._logs.sync()
        self.send("done", count=len(seen))

    def _send_listed(self, objects: list[dict[str, Any]]) -> None:
        batch = listing_batch(objects)
        with self._lock:
            self._w.send_batch(batch)

    def op_read(self, msg: dict[str, Any]) -> None:
        assert self._module is not None
        fragment = msg["fragment"]
        name = fragment.get("name")
        try:
            chunks = self._module.read_bytes(self._ctx, fragment)
        except BaseException as e:
            raise UserError(f"read_bytes({name!r}) raised {_describe(e)}",
                            self._tb(e)) from None
        stream = ChunkStream(chunks if chunks is not None else ())
        log = RowRejects(name, self._schema, self._parser)
        conformer = Conformer(self._schema, name, log)
        custom = getattr(self._module, "parser_function", None)

        def emit(batch: pa.RecordBatch) -> None:
            out = conformer.conform(batch)
            if out.num_rows:
                with self._lock:
                    self._w.send_batch(out)

        try:
            parse_into(stream, self._parser, custom, emit, rejects=log)
            conformer.finish()
            self._w.flush()
        except (ParseError, DataError):
            if stream.error is not None:
                self._raise_user(name, stream.error)
            raise
        except MemoryError:
            raise
        except BaseException as e:
            self._raise_user(name, stream.error or e)
        self._logs.sync()
        self.send("done", rows=log.written, read=log.read, rejected=log.rejected,
                  defaulted=log.defaulted, warnings=log.warnings,
                  rejects=[r.to_wire() for r in log.records])

    def _raise_user(self, name: str, e: BaseException) -> None:
        where = "parser_function" if self._parser.format == "custom" else "read_bytes"
        if isinstance(e, TypeError) and "read_bytes yielded" in str(e):
            raise UserError(f"{e} (fragment {name!r})") from None
        raise UserError(f"{where}({name!r}) raised {_describe(e)}", self._tb(e)) from None

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
                return 0
            handler = ops.get(op)
            try:
                if handler is None:
                    raise RuntimeError(f"unknown op {op!r}")
                handler(msg)
            except UserError as e:
                self._fail(FailureKind.USER, str(e), e.tb)
                if op == "open":
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


def main() -> int:
    # Keep the protocol on a private copy of stdout before fd 1 is handed to the log pump.
    proto_out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code reading stdin must not eat frames
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    code = Runtime(proto_in, proto_out).serve()
    proto_out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
