"""The runtime's side of the user process: starts the shim under the user's interpreter
and turns its frames into what the runtime consumes.

Why two processes: the user's pins must win over the project's own stack. The user's
code imports in their environment (worker/runtime/shim.py under `<user python> -I`),
the parsers, conformance and Arrow run here, in the project's environment, and nothing
but bytes crosses between them: read_bytes() output as raw chunks of >= 1 MiB,
parser_function rows as marshalled batches of columns (checked here, since user code can
write to the pipe too), listings as marshal batches. Each side runs on its own
core, so the user's read_bytes overlaps the runtime's parsing.

The user process's fds 1 and 2 are the runtime's (the log pump's pipe), so user prints
become log frames; it has no descriptor of the host's protocol. If it dies, the runtime
dies the same way (signal or exit code), after ending whatever it started: the session's
context() state is gone with it, and the host already knows how to report a sandbox
that died. It dies with the runtime too (`shim.die_with_runtime`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import marshal
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from worker.runtime import shim
from worker.runtime.formats.rows import RowColumns
from worker.runtime.warden import end_descendants
from worker.spec import ParserSpec

SHIM = os.path.abspath(shim.__file__)
_F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe takes a whole B frame per write
_PIPE_SIZE = 1 << 20


class UserError(Exception):
    """The connector's code raised or broke the contract; carries the user's traceback.
    `kind` is "user", or "limit" when it ran out of memory."""

    def __init__(self, message: str, tb: str = "", kind: str = "user",
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.tb = tb
        self.kind = kind
        self.fatal = fatal  # the user process broke the pipe's protocol: end the session


class _SafeRows(pickle.Unpickler):
    """Rows that marshal could not carry: only standard value types may be loaded."""

    ALLOWED = {("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")}
    ALLOWED |= {("decimal", "Decimal"), ("uuid", "UUID"), ("zoneinfo", "ZoneInfo"),
                ("collections", "OrderedDict"), ("builtins", "set"),
                ("builtins", "frozenset"), ("builtins", "bytearray"),
                ("zoneinfo", "_unpickle")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise UserError(f"parser_function emitted a value of type {module}.{name}; rows "
                            "may hold str, int, float, bool, bytes, None, datetime, date, "
                            "time, timedelta, Decimal, UUID, lists and dicts")
        return super().find_class(module, name)


def _set_pipe_size(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


class UserProcess:
    """The shim, running the connector's code under `python` (the user's interpreter)."""

    def __init__(self, python: str) -> None:
        ctl_r, ctl_w = os.pipe()
        data_r, data_w = os.pipe()
        _set_pipe_size(data_w)
        # The runtime's own interpreter settings (PYTHON*, PYDANTIC_DISABLE_PLUGINS) stay
        # with the runtime: the user's environment is theirs, pins and plugins included.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYDANTIC_"))}
        # The user's interpreter first on PATH: a subprocess `python` gets their env too.
        env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._proc = subprocess.Popen(
            [python, "-I", "-u", SHIM, str(ctl_r), str(data_w), str(os.getpid())],
            stdin=subprocess.DEVNULL, pass_fds=(ctl_r, data_w), env=env,
        )
        os.close(ctl_r)
        os.close(data_w)
        self._ctl = ctl_w
        self._data = open(data_r, "rb", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._reading = False
        self._limit = shim.MAX_FRAME
        self._data_kinds: tuple[bytes, ...] = (shim.BYTES,)

    # --- frames ----------------------------------------------------------------------

    def _send(self, op: str, **fields: Any) -> None:
        try:
            shim.write_json(self._ctl, op, **fields)
        except BrokenPipeError:
            self.died()

    def _next(self) -> tuple[bytes, bytes]:
        try:
            frame = shim.read_frame(self._read_data)
        except EOFError:
            frame = None
        if frame is None:
            self.died()
        return frame

    def _read_data(self, n: int) -> bytes:
        if n == shim.HEADER.size:
            return self._data.read(n)
        if n > self._limit:
            # User code can write to the shim's pipe (it is a descriptor of its own
            # process): a forged header must not make this process allocate it.
            self._broken(f"a frame of {n} bytes (at most {self._limit})")
        return self._data.read(n)

    def _broken(self, what: str) -> NoReturn:
        self._reading = False  # nothing more on this pipe can be trusted: no draining
        self._proc.kill()
        raise UserError(f"the connector's process broke the runtime's protocol: {what}; "
                        "user code must not write to the process's own descriptors",
                        fatal=True)

    def _control(self, body: bytes) -> dict[str, Any]:
        try:
            msg: dict[str, Any] = json.loads(body)
        except ValueError:
            self._broken("a control frame that is not JSON")
        if msg.get("op") == "error":
            self._reading = False
            raise UserError(str(msg.get("message")), str(msg.get("traceback", "")),
                            str(msg.get("kind", "user")))
        return msg

    def _expect(self, op: str) -> dict[str, Any]:
        kind, body = self._next()
        msg = self._control(body) if kind == shim.JSON else {}
        if msg.get("op") != op:
            self._broken(f"expected {op!r}, got {msg.get('op') or kind!r}")
        return msg

    def died(self) -> NoReturn:
        """The user process ended mid-conversation: end this process the same way."""
        code = self._proc.wait()
        end_descendants()  # what it started (escaped into sessions of their own too)
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        if code < 0:
            with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
                signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code if code > 0 else 1)

    # --- the connector's functions -----------------------------------------------------

    def open(self, module_dir: str, credentials: str | None,
             display_dir: str | None = None) -> None:
        """Import the connector and run context(); tracebacks name files under
        `display_dir` (the connector's own path on the host) instead of `module_dir`."""
        self._send("open", module_dir=module_dir, credentials=credentials,
                   display_dir=display_dir)
        self._expect("ready")

    def list(self) -> Iterator[list[dict[str, Any]]]:
        """The listing, prefixes expanded and validated by the shim, in chunks."""
        self._send("list")
        while True:
            kind, body = self._next()
            if kind == shim.MARSHAL:
                objects = self._load_listed(body)
            else:
                msg = self._control(body)
                if msg.get("op") == "end":
                    return
                objects = msg["objects"]
            yield objects

    def _load_listed(self, body: bytes) -> list[dict[str, Any]]:
        try:
            objects = marshal.loads(body)
        except (ValueError, EOFError, TypeError):
            self._broken("a listing frame that is not marshal data")
        if type(objects) is not list or not all(type(o) is dict for o in objects):
            self._broken("a listing frame that is not a list of objects")
        return objects

    def _read(self, fragment: dict[str, Any], custom: dict[str, Any] | None
              ) -> Iterator[tuple[bytes, bytes]]:
        """Data frames of one read. Closing the generator before the end aborts the read:
        the shim stops at its next frame and the rest is drained, so the next op starts
        on a clean pipe."""
        self._send("read", fragment=fragment, custom=custom)
        self._reading = True
        try:
            while True:
                kind, body = self._next()
                if kind == shim.JSON:
                    self._control(body)
                    self._reading = False
                    return
                if kind not in self._data_kinds:
                    self._broken(f"a frame of kind {kind!r}")
                yield kind, body
        finally:
            if self._reading:
                self._abort()

    def _abort(self) -> None:
        self._send("abort")
        while self._reading:
            kind, body = self._next()
            if kind == shim.JSON:
                self._reading = False
                with contextlib.suppress(UserError):
                    self._control(body)

    def read_bytes(self, fragment: dict[str, Any]) -> Iterator[bytes]:
        """read_bytes(context, fragment), as raw chunks of about a MiB or more."""
        self._data_kinds = (shim.BYTES,)
        for _, body in self._read(fragment, None):
            yield body

    def read_rows(self, fragment: dict[str, Any], parser: ParserSpec
                  ) -> Iterator[RowColumns]:
        """parser_function's rows for one fragment, in batches of columns."""
        custom = {"reader": parser.reader, "encoding": parser.encoding}
        self._data_kinds = (shim.MARSHAL, shim.PICKLE)
        for kind, body in self._read(fragment, custom):
            try:
                batch = (marshal.loads(body) if kind == shim.MARSHAL
                         else _SafeRows(io.BytesIO(body)).load())
            except (ValueError, EOFError, TypeError, pickle.UnpicklingError):
                self._broken("a row batch that does not decode")
            del body
            yield self._row_columns(batch)

    def _row_columns(self, batch: Any) -> RowColumns:
        """A decoded batch checked for the shape `shim.columns` makes, before anything is
        built from it: the row count bounded, names distinct strings, every column a list
        of exactly that many values (the values themselves are Arrow's to judge)."""
        if type(batch) is not tuple or len(batch) != 3:
            self._broken(f"a row batch of another shape ({type(batch).__name__})")
        rows, names, cols = batch
        if type(rows) is not int or not 0 < rows <= shim.ROW_BATCH:
            self._broken(f"a row batch of {rows!r} rows (1 to {shim.ROW_BATCH})")
        if (type(names) is not tuple or not all(type(k) is str for k in names)
                or len(set(names)) != len(names)):
            self._broken("a row batch whose column names are not distinct strings")
        if (type(cols) is not list or len(cols) != len(names)
                or not all(type(c) is list and len(c) == rows for c in cols)):
            self._broken("a row batch whose columns do not match its names and row count")
        return RowColumns(rows, names, cols)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            shim.write_json(self._ctl, "close")
        with contextlib.suppress(OSError):
            os.close(self._ctl)
        self._data.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
