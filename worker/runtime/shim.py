"""The user process: imports the connector in the user's environment and runs its code.

Standard library only. It runs as `<user python> -I -u shim.py CTL_FD DATA_FD RUNTIME_PID`
under the
user's interpreter (their pins over the default packages), where the project's own stack
(pyarrow, fastavro, pydantic) is not on the import path: `-I` ignores PYTHONPATH and the
user site, and the script's own folder is not added to sys.path. The runtime process
(worker/runtime/main.py, the project's environment) started it and is its only peer:

    runtime -> user   (CTL_FD)   J frames: open, list, read, abort, close
    user -> runtime   (DATA_FD)  J frames: ready, listed, end, error
                                 B frames: raw bytes of read_bytes, >= CHUNK each
                                 M frames: a batch of parser_function rows as columns
                                           (see `columns`), or of listed objects,
                                           as marshal
                                 P frames: the same, pickled, when marshal refuses a value

A frame is 1 byte kind + 4 bytes big-endian length + body, as on the host's protocol.
The user's prints go to fds 1 and 2, which the runtime forwards as log frames. Every
failure of user code becomes an `error` frame naming the function and carrying the
user's traceback; this process only dies when the user's code kills it.

The runtime imports this module for the frame constants and helpers: keep it stdlib-only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import marshal
import os
import pickle
import select
import struct
import sys
import traceback
from collections.abc import Callable, Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

HEADER = struct.Struct(">cI")
JSON, BYTES, MARSHAL, PICKLE = b"J", b"B", b"M", b"P"
CHUNK = 1 << 20           # bytes per B frame: small user chunks are coalesced up to this
MAX_CHUNK = 16 << 20      # bigger user chunks cross in slices of this (no copy)
MAX_FRAME = 256 << 20     # the runtime refuses a frame over this (a forged header)
LIST_CHUNK = 2000         # listed objects per `listed` frame at most
LIST_CHUNK_BYTES = 1 << 20  # and about this many bytes: fat metadata stays in small frames
ROW_BATCH = 65536         # most parser_function rows per M/P frame
CODE_FILE = "connector.py"
_HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------- frames


def write_frame(fd: int, kind: bytes, body: bytes | memoryview) -> None:
    """One frame, header and body in one writev where the pipe takes it."""
    parts = [memoryview(HEADER.pack(kind, len(body))), memoryview(body)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts.pop(0)
        if parts and n:
            parts[0] = parts[0][n:]


def row_batcher(batch_rows: int, sink: Callable[[list[dict[str, Any]], int], None]
                ) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """(onNext, flush) for a parser_function: rows gathered into lists of `batch_rows`,
    each handed to `sink(rows, number_of_its_first_row)`. Shared by this shim and the
    runtime's in-process custom parser; closures, since onNext runs once per row."""
    rows: list[dict[str, Any]] = []
    append = rows.append
    sent = 0

    def flush() -> None:
        nonlocal rows, append, sent
        if not rows:
            return
        batch, first = rows, sent + 1
        rows = []
        append = rows.append
        sent += len(batch)
        sink(batch, first)

    def on_next(row: Any) -> None:
        # Called once per row: kept to a type check, an append and a length check.
        if type(row) is not dict and not isinstance(row, dict):
            raise TypeError(f"onNext expects a dict, got {type(row).__name__} "
                            f"(row {sent + len(rows) + 1})")
        append(row)
        if len(rows) >= batch_rows:
            flush()

    return on_next, flush


def write_json(fd: int, op: str, **fields: Any) -> None:
    write_frame(fd, JSON, json.dumps({"op": op, **fields}, separators=(",", ":"),
                                     default=str).encode())


def read_exact_fd(fd: int, n: int) -> bytes:
    """n bytes from a raw fd (short only at end of stream): for small control frames."""
    buf = b""
    while len(buf) < n:
        data = os.read(fd, n - len(buf))
        if not data:
            break
        buf += data
    return buf


def read_frame(read: Callable[[int], bytes]) -> tuple[bytes, bytes] | None:
    """The next frame via `read(n)` (n bytes, fewer only at the end of the stream);
    None at a clean end of stream."""
    head = read(HEADER.size)
    if not head:
        return None
    if len(head) != HEADER.size:
        raise EOFError("truncated frame header")
    kind, size = HEADER.unpack(head)
    body = read(size)
    if len(body) != size:
        raise EOFError("truncated frame body")
    return kind, body


# A batch as it crosses: (row count, column names, one list of values per column).
Columns = tuple[int, tuple[str, ...], list[list[Any]]]


def columns(rows: list[dict[str, Any]], first: int = 1) -> Columns:
    """Rows -> columns: the union of the rows' keys in first-seen order, None where a
    row lacks a key. Columns, because the runtime then builds each Arrow column from one
    list and nothing crosses per row but values (no dict per row to marshal, unmarshal
    and take apart again). Only C-level passes over the rows (map, itemgetter,
    dict.fromkeys): no bytecode runs per value. `first` numbers the rows in errors."""
    n = len(rows)
    names = tuple(rows[0]) if rows else ()
    # Common case: every row an exact dict with the first row's keys. Exact: a dict
    # subclass's __missing__ (defaultdict) would invent values for itemgetter.
    if len(set(map(len, rows))) == 1 and set(map(type, rows)) == {dict}:
        try:
            cols = [list(map(itemgetter(k), rows)) for k in names]
        except KeyError:
            pass  # the same sizes but other keys: the union below
        else:
            _check_names(names, rows, first)
            return n, names, cols
    names = tuple(dict.fromkeys(chain.from_iterable(rows)))
    _check_names(names, rows, first)
    return n, names, [list(map(dict.get, rows, repeat(k, n))) for k in names]


def _check_names(names: tuple[Any, ...], rows: list[dict[str, Any]], first: int) -> None:
    if all(type(k) is str for k in names):
        return
    for i, row in enumerate(rows, first):  # only on the way to an error
        for k in row:
            if type(k) is not str:
                raise TypeError(f"onNext row {i} has the key {k!r} ({type(k).__name__}); "
                                "column names must be strings")


def encode_columns(batch: Columns) -> tuple[bytes, bytes]:
    """marshal (fastest) unless a value is beyond it (datetime, Decimal): then pickle,
    which the runtime loads with an allowlist of standard types. A value neither takes
    is a TypeError naming its column and type."""
    try:
        return MARSHAL, marshal.dumps(batch)
    except ValueError:
        pass
    try:
        return PICKLE, pickle.dumps(batch, protocol=5)
    except Exception:
        pass
    n, names, cols = batch
    for name, col in zip(names, cols, strict=True):  # only on the way to an error
        for v in col:
            try:
                pickle.dumps(v, protocol=5)
            except Exception as e:
                raise TypeError(f"column {name!r} holds a {type(v).__name__}, which cannot "
                                f"cross to the runtime ({type(e).__name__}: {e})") from None
    raise TypeError("the rows cannot cross to the runtime")  # pragma: no cover


# --------------------------------------------------------------------------- user code


class UserFailure(Exception):
    """User code failed: `message` names the function, `tb` is the user's traceback."""

    def __init__(self, message: str, tb: str = "", kind: str = "user") -> None:
        super().__init__(message)
        self.message, self.tb, self.kind = message, tb, kind


class _Aborted(BaseException):
    """The runtime stopped wanting this fragment: unwinds through the user's code."""


class _Refused(BaseException):
    """Rows that cannot cross (a key, a value, a size): unwinds through the user's code,
    which an `except Exception` around onNext cannot swallow."""

    def __init__(self, failure: UserFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


# The connector folder inside the sandbox -> the connector's own path (as its author
# knows it), for tracebacks; set by `open`.
_rename: tuple[str, str] | None = None


def _user_traceback(exc: BaseException) -> str:
    """The traceback as the user would want it: their frames, not the shim's, and their
    files under the connector's own path."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != _HERE]
    if _rename is not None and _rename[0] != _rename[1]:
        inside, outside = _rename[0].rstrip("/") + "/", _rename[1].rstrip("/") + "/"
        for f in frames:
            if f.filename.startswith(inside):
                _ = f.line  # read the source line while its file is still at hand
                f.filename = outside + f.filename[len(inside):]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _failure(where: str, exc: BaseException) -> UserFailure:
    if isinstance(exc, MemoryError):
        return UserFailure("out of memory", "", "limit")
    return UserFailure(f"{where} raised {type(exc).__name__}: {exc}", _user_traceback(exc))


def _guarded(call: Callable[[], Any], called: str, iterated: str) -> Iterator[Any]:
    """The items of what a user function returns; a failure of the call, or of any step
    of the iteration, as UserFailure naming `called` or `iterated`."""
    try:
        it = iter(call())
    except BaseException as e:
        raise _failure(called, e) from None
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except BaseException as e:
            raise _failure(iterated, e) from None
        yield item


class ChunkReader(io.RawIOBase):
    """read_bytes() chunks behind a non-seekable file, for parser_function's reader.

    A failure of read_bytes is kept in `error` as well as raised: the user's parser may
    catch or wrap it, and the fragment must still fail with read_bytes' own error."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = memoryview(b"")
        self.error: UserFailure | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                chunk = next(self._it, None)
            except UserFailure as e:
                self.error = e
                raise
            if chunk is None:
                return 0
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class Shim:
    def __init__(self, ctl_fd: int, data_fd: int) -> None:
        self._ctl = ctl_fd
        self._out = data_fd
        self._module: Any = None
        self._ctx: Any = None
        self._aborted = False

    def _flush_user_output(self) -> None:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the user may have closed or replaced it
                f.flush()

    def reply(self, op: str, **fields: Any) -> None:
        self._flush_user_output()
        write_json(self._out, op, **fields)

    def _abort_requested(self) -> bool:
        """Whether the runtime sent `abort` (checked between frames, never blocking)."""
        if not self._aborted and select.select([self._ctl], [], [], 0)[0]:
            # The runtime writes whole frames and sends nothing else during a read.
            frame = read_frame(self._read_ctl)
            if frame is None or json.loads(frame[1]).get("op") == "abort":
                self._aborted = True
        return self._aborted

    def _read_ctl(self, n: int) -> bytes:
        return read_exact_fd(self._ctl, n)

    # --- ops -------------------------------------------------------------------------

    def op_open(self, msg: dict[str, Any]) -> None:
        global _rename
        folder = msg["module_dir"]
        if msg.get("display_dir"):
            _rename = (folder, str(msg["display_dir"]))
        sys.path.insert(0, folder)
        try:
            spec = importlib.util.spec_from_file_location(
                "connector", os.path.join(folder, CODE_FILE))
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules["connector"] = module
            spec.loader.exec_module(module)
        except MemoryError:
            raise UserFailure("out of memory", "", "limit") from None
        except BaseException as e:
            raise UserFailure(f"importing {CODE_FILE} failed: {type(e).__name__}: {e}",
                              _user_traceback(e)) from None
        for fn in ("list_objects", "read_bytes"):
            if not callable(getattr(module, fn, None)):
                raise UserFailure(f"{CODE_FILE} does not define {fn}()")
        self._module = module
        ctx_fn = getattr(module, "context", None)
        credentials = msg.get("credentials")
        ctx: Any = {}
        if callable(ctx_fn):
            try:
                ctx = ctx_fn(credentials if credentials is not None else "")
            except BaseException as e:
                raise _failure("context()", e) from None
        self._ctx = ctx or {}
        self.reply("ready")

    def _list(self, metadata: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
        call = f"list_objects({where})"
        items = _guarded(lambda: self._module.list_objects(self._ctx, metadata), call, call)
        for i, obj in enumerate(items, 1):
            # Runs once per listed object (100,000s): the common case (a dict whose name
            # and fingerprint are ASCII str) costs two type checks and two isascii calls;
            # anything else takes the checks that name the problem.
            if type(obj) is dict:
                name, fp = obj.get("name"), obj.get("fingerprint")
                if (type(name) is str and type(fp) is str and name.isascii()
                        and fp.isascii()):
                    yield obj
                    continue
            self._check_listed(obj, i, call, where)
            yield obj

    @staticmethod
    def _check_listed(obj: Any, i: int, call: str, where: str) -> None:
        if not isinstance(obj, dict):
            raise UserFailure(f"{call} yielded {type(obj).__name__} as item {i}; "
                              "expected a dict with name, fingerprint, is_prefix")
        for key in ("name", "fingerprint"):
            if not isinstance(obj.get(key), str):
                raise UserFailure(
                    f"list_objects({where}) item {i} ({obj.get('name')!r}): '{key}' must "
                    f"be a string, got {type(obj.get(key)).__name__}")
            if not obj[key].isascii():
                try:
                    obj[key].encode("utf-8")
                except UnicodeEncodeError:
                    raise UserFailure(
                        f"list_objects({where}) item {i} ({obj.get('name')!r}): '{key}' "
                        "is not valid Unicode text (it holds a lone surrogate)") from None

    def op_list(self, _: dict[str, Any]) -> None:
        seen: set[str] = set()
        chunk: list[dict[str, Any]] = []
        size = 0  # string bytes in `chunk`: a cheap stand-in for its JSON size
        # Depth-first expansion of prefixes, without recursion: listings can be deep. The
        # inner `for` resumes the parent's iterator once a prefix's listing is done.
        stack: list[Iterator[dict[str, Any]]] = [self._list({}, "{}")]
        while stack:
            for obj in stack[-1]:
                if obj.get("is_prefix"):
                    stack.append(self._list(obj, repr(obj["name"])))
                    break
                name = obj["name"]
                if name in seen:
                    raise UserFailure(f"list_objects yielded the name {name!r} twice; "
                                      "fragment names must be unique")
                seen.add(name)
                chunk.append(obj)
                if len(obj) == 2:  # name and fingerprint only
                    size += len(name) + len(obj["fingerprint"])
                else:
                    size += sum(len(v) for v in obj.values() if isinstance(v, str))
                if len(chunk) >= LIST_CHUNK or size >= LIST_CHUNK_BYTES:
                    self._send_listed(chunk)
                    chunk, size = [], 0
            else:
                stack.pop()
        if chunk:
            self._send_listed(chunk)
        self.reply("end", count=len(seen))

    def _send_listed(self, objects: list[dict[str, Any]]) -> None:
        # marshal: a fifth of JSON's cost both ways, for a listing of 100,000s. Extra
        # metadata marshal refuses (datetime, ...) goes as JSON, made text by `str`
        # as the runtime would make it anyway.
        try:
            write_frame(self._out, MARSHAL, marshal.dumps(objects))
        except ValueError:
            write_json(self._out, "listed", objects=objects)

    def _chunks(self, fragment: dict[str, Any]) -> Iterator[bytes]:
        """read_bytes() as bytes; its failures as UserFailure naming read_bytes, also
        when parser_function pulls the bytes: the traceback points into read_bytes."""
        name = fragment.get("name")
        chunks = _guarded(lambda: self._module.read_bytes(self._ctx, fragment) or (),
                          f"read_bytes({name!r})", f"read_bytes({name!r})")
        for index, chunk in enumerate(chunks, 1):
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            elif not isinstance(chunk, bytes | bytearray | memoryview):
                raise UserFailure(f"read_bytes yielded {type(chunk).__name__} as chunk "
                                  f"{index}; expected bytes or str (fragment {name!r})")
            if chunk:
                yield chunk

    def op_read(self, msg: dict[str, Any]) -> None:
        self._aborted = False
        fragment = msg["fragment"]
        custom = msg.get("custom")
        if custom is not None:
            self._read_custom(fragment, custom)
        else:
            self._read_bytes(fragment)
        self.reply("end", aborted=self._aborted)

    def _read_bytes(self, fragment: dict[str, Any]) -> None:
        # Big chunks go out as they are (no copy); small ones are joined up to CHUNK so
        # a line-per-chunk connector does not pay a frame per line.
        pending: list[bytes | bytearray | memoryview] = []
        size = 0
        for chunk in self._chunks(fragment):
            if len(chunk) >= CHUNK and not pending:
                view = memoryview(chunk)
                for i in range(0, len(view), MAX_CHUNK):
                    write_frame(self._out, BYTES, view[i:i + MAX_CHUNK])
            else:
                pending.append(chunk)
                size += len(chunk)
                if size < CHUNK:
                    continue
                write_frame(self._out, BYTES, b"".join(pending))
                pending, size = [], 0
            if self._abort_requested():
                return
        if pending:
            write_frame(self._out, BYTES, b"".join(pending))

    def _read_custom(self, fragment: dict[str, Any], spec: dict[str, Any]) -> None:
        name = fragment.get("name")
        fn = getattr(self._module, "parser_function", None)
        if not callable(fn):
            raise UserFailure(f"parser.format is 'custom' but {CODE_FILE} does not define "
                              "parser_function(reader, onNext)")
        raw = ChunkReader(self._chunks(fragment))
        buffered = io.BufferedReader(raw, buffer_size=1 << 20)
        reader: io.BufferedReader | io.TextIOWrapper = buffered
        if spec.get("reader", "text") == "text":
            reader = io.TextIOWrapper(buffered, encoding=spec.get("encoding") or "utf-8",
                                      newline=None)
        batch_rows = int(spec.get("batch_rows") or ROW_BATCH)
        where = f"parser_function({name!r})"
        refused: _Refused | None = None

        def refuse(message: str) -> _Refused:
            nonlocal refused
            refused = _Refused(UserFailure(f"{where}: {message}"))
            return refused

        def send(batch: Columns, first: int) -> None:
            try:
                kind, body = encode_columns(batch)
            except TypeError as e:
                raise refuse(f"rows {first}-{first + batch[0] - 1}: {e}") from None
            n, names, cols = batch
            if len(body) > MAX_FRAME:
                if n == 1:
                    raise refuse(f"onNext row {first} is {len(body) >> 20} MiB encoded; a "
                                 f"row may be at most {MAX_FRAME >> 20} MiB")
                del body  # very wide rows: halve the batch
                half = n // 2
                send((half, names, [c[:half] for c in cols]), first)
                send((n - half, names, [c[half:] for c in cols]), first + half)
                return
            write_frame(self._out, kind, body)

        def sink(rows: list[dict[str, Any]], first: int) -> None:
            try:
                batch = columns(rows, first)
            except TypeError as e:
                raise refuse(str(e)) from None
            # The batcher handed this list over: emptied, the values are held by the
            # columns alone, which spares marshal its reference tracking of shared objects.
            rows.clear()
            send(batch, first)
            if self._abort_requested():
                raise _Aborted

        on_next, flush = row_batcher(batch_rows, sink)
        try:
            fn(reader, on_next)
            if not self._aborted and refused is None:
                flush()
        except _Aborted:
            return
        except BaseException as e:
            if raw.error is not None:
                raise raw.error from None
            if refused is not None:
                raise refused.failure from None
            if isinstance(e, UserFailure):
                raise
            raise _failure(where, e) from None
        if raw.error is not None:  # the user's parser caught it: the fragment still fails
            raise raw.error
        if refused is not None:  # the user's parser caught it: the fragment still fails
            raise refused.failure

    # --- loop ------------------------------------------------------------------------

    def serve(self) -> int:
        ops = {"open": self.op_open, "list": self.op_list, "read": self.op_read}
        while True:
            frame = read_frame(self._read_ctl)
            if frame is None:
                return 0
            msg = json.loads(frame[1])
            op = msg.get("op")
            if op == "close":
                return 0
            if op == "abort":
                continue  # it crossed the end of a read that had already finished
            try:
                ops[op](msg)
            except UserFailure as e:
                self.reply("error", kind=e.kind, message=e.message, traceback=e.tb)
                if op == "open":
                    return 1
            except MemoryError:
                self.reply("error", kind="limit", message="out of memory", traceback="")


def die_with_runtime(runtime_pid: int) -> None:
    """SIGKILL this process when the runtime dies. The runtime ends what the user's code
    starts while it lives (worker/runtime/warden.py); this covers the runtime killed
    outright (a host's last resort, the OOM killer) while this process, in a session of
    its own, is out of reach of its process group. The signal follows the thread that
    spawned this process: the runtime's main thread, which lives as long as it does."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != runtime_pid:  # it died before the prctl
        os._exit(1)


def main(argv: list[str]) -> int:
    die_with_runtime(int(argv[3]))
    return Shim(int(argv[1]), int(argv[2])).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
