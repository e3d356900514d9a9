"""The host side of the framed protocol, shared by every sandbox back end.

A back end only knows how to start a runtime and move bytes (`Channel`); everything
about frames, deadlines, output caps and turning failures into precise messages lives
here once, so the process and Docker sandboxes fail the same way for the same cause.

A session whose container depends on host firewall rules (egress, an allowlist) gets
them from its channel as a `Fence` and checks them before every listing and every read
request: if any is gone, the container is stopped and the fragment fails as `infra`
naming the fence, so a flushed DOCKER-USER never leaves a warm session running
unfenced for more than the fragment in flight.

Nothing the runtime sends is trusted (user code can write to the protocol's
descriptor): every frame is validated for the phase the session is in
(worker.sandbox.frames), a bad one is the user's failure, and a failure kind the
runtime claims is believed only when it cannot shift blame to the platform.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from pydantic import TypeAdapter

from worker.listing import Listing
from worker.models import FailureKind, Fragment, FragmentFailure, ReadReport
from worker.protocol import (
    ARROW,
    JSON,
    LISTING_SCHEMA,
    ByteSource,
    ProtocolError,
    encode_json,
    read_header,
)
from worker.redact import Redactor
from worker.runtime.conform import output_schema
from worker.sandbox import frames
from worker.sandbox.exits import out_of_memory
from worker.sandbox.firewall import Fence
from worker.sandbox.sizes import human_size
from worker.settings import settings
from worker.spec import Connector, Limits

# A control frame (log, error, done) bigger than this is not one the runtime writes.
CONTROL_FRAME_CAP = 16 << 20
# The runtime sends a log in pieces of at most 64 KiB of output (at most 384 KiB once
# JSON escapes it): a bigger control frame must be a read's report (`done`: up to
# 100,000 rejected rows, as large as the read's output budget allows) or an error (the
# user's exception text, cut by the host). The runtime writes every control object
# `{"op":"<op>", ...}` (worker.protocol), so a frame's first bytes say which it claims to
# be; anything else that size is refused before the rest is buffered, and a claim its
# body belies (a log behind a report's first bytes) is refused once parsed.
LOG_FRAME_CAP = 1 << 20
_LARGE_OPS = {b'{"op":"done",': frames.Read | frames.Listed,
              b'{"op":"error"': frames.Failed}
_PREFIX = 13
LOG_HEAD = 32 << 10
LOG_TAIL = 32 << 10
# Read requests in flight per session in read_many: this one and the next.
PIPELINE = 2


class Channel(Protocol):
    """Bytes to and from one running runtime."""

    source: ByteSource
    fence: Fence | None  # host firewall rules the runtime's network depends on, if any

    def send(self, data: bytes) -> None:
        """Write to the runtime's stdin; raises OSError if it is gone."""
        ...

    def kill(self) -> None:
        """Stop the runtime and everything it started, now."""
        ...

    def exit_reason(self) -> tuple[str, FailureKind]:
        """Why the runtime's stdout ended: e.g. ('out of memory (limit 256 MiB)', LIMIT)."""
        ...



@dataclass
class _Budget:
    """Bytes one exchange may bring to the host. `counts_control`: log and control
    frames count too (a read's log is part of its output); otherwise only Arrow does."""

    limit: int
    what: str
    counts_control: bool = True
    arrow: bool = True
    used: int = 0

    def room(self) -> int:
        return max(0, self.limit - self.used - 5)


def _what(item: object) -> str:
    if isinstance(item, pa.RecordBatch):
        return "an Arrow frame"
    return f"{getattr(item, 'op', '?')!r}"


class LogBuffer:
    """A fragment's log, bounded: the head and the tail survive a flood."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def add(self, text: str) -> None:
        data = text.encode()
        room = LOG_HEAD - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > LOG_TAIL:
                self.dropped += len(self._tail) - LOG_TAIL
                del self._tail[: len(self._tail) - LOG_TAIL]

    def text(self) -> str:
        mid = f"\n... [{self.dropped} bytes of log dropped] ...\n" if self.dropped else ""
        return (bytes(self._head) + mid.encode() + bytes(self._tail)).decode("utf-8", "replace")


class FramedSession:
    """A `Session` over any `Channel`."""

    def __init__(self, channel: Channel, connector: Connector, module_dir: str,
                 limits: Limits | None = None) -> None:
        self._ch = channel
        self._connector = connector
        self._module_dir = module_dir
        self._limits = limits or connector.spec.limits
        self._usable = True
        self._log = LogBuffer()
        self._declared = output_schema(connector.spec.schema_)
        self._redact = Redactor(None)

    @classmethod
    def started(cls, channel: Channel, connector: Connector, module_dir: str,
                credentials: str | None) -> FramedSession:
        """A session whose runtime ran context(); the runtime is killed if that fails."""
        session = cls(channel, connector, module_dir)
        try:
            session.start(credentials)
        except BaseException:
            session.close()
            raise
        return session

    # --- plumbing ------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._usable

    def _deadline(self) -> float:
        return time.monotonic() + self._limits.timeout

    def _send(self, op: str, **fields: object) -> None:
        try:
            self._ch.send(encode_json({"op": op, **fields}))
        except OSError:
            self._usable = False
            msg, kind = self._ch.exit_reason()
            raise FragmentFailure(msg, kind, log=self._log.text()) from None

    def _check_fence(self) -> None:
        """Fail closed between fragments when the network fence is no longer there."""
        fence = self._ch.fence
        if fence is None or not (gone := fence.missing()):
            return
        self._usable = False
        self._ch.kill()
        shown = "; ".join(gone[:3]) + (f"; and {len(gone) - 3} more" if len(gone) > 3 else "")
        raise FragmentFailure(f"{fence.name} is no longer in place (missing: {shown}); "
                              "the session was stopped rather than run unfenced",
                              FailureKind.INFRA, log=self._log.text())

    def _broken(self, e: BaseException) -> FragmentFailure:
        """The runtime stopped answering properly: kill it and say why."""
        self._usable = False
        if isinstance(e, TimeoutError):
            self._ch.kill()
            return FragmentFailure(f"timed out after {self._limits.timeout:g} s",
                                   FailureKind.LIMIT, log=self._log.text())
        if isinstance(e, ProtocolError):
            self._ch.kill()
            return FragmentFailure(f"sandbox broke the protocol: {e}", FailureKind.USER,
                                   log=self._log.text())
        msg, kind = self._ch.exit_reason()
        return FragmentFailure(msg, kind, log=self._log.text())

    def _frames(self, deadline: float, phase: TypeAdapter[Any], budget: _Budget
                ) -> Iterator[pa.RecordBatch | frames.Control]:
        """Validated frames until the caller stops: batches and the phase's control
        frames are yielded, `log` frames absorbed, `error` frames raised."""
        src = self._ch.source
        while True:
            try:
                kind, size = read_header(src, deadline)
                if kind == ARROW and not budget.arrow:
                    raise ProtocolError(f"an Arrow frame of {human_size(size)} where none "
                                        "belongs")
                counted = kind == ARROW or budget.counts_control
                if counted and size > budget.room():
                    raise self._over(budget)  # refused from its header: never buffered
                if not counted and size > CONTROL_FRAME_CAP:
                    raise ProtocolError(f"control frame of {human_size(size)}")
                body = b""
                if kind == JSON and size > LOG_FRAME_CAP:
                    body = src.read_exact(_PREFIX, deadline)
                    if body not in _LARGE_OPS:
                        raise ProtocolError(
                            f"a control frame of {human_size(size)}; only a report or an "
                            f"error may be over {human_size(LOG_FRAME_CAP)}")
                body += src.read_exact(size - len(body), deadline)
            except (TimeoutError, EOFError, ProtocolError, OSError) as e:
                raise self._broken(e) from None
            if counted:
                budget.used += size + 5
            if kind == ARROW:
                try:
                    batch = frames.decode_batch(body)
                except frames.TooWide as e:
                    self._usable = False
                    self._ch.kill()
                    raise FragmentFailure(str(e), FailureKind.LIMIT,
                                          log=self._log.text()) from None
                except ProtocolError as e:
                    raise self._broken(e) from None
                budget.used += max(0, frames.logical_size(batch) - size)
                if budget.used > budget.limit:
                    raise self._over(budget)
                yield batch
                continue
            try:
                msg = frames.parse_control(body, phase)
            except ProtocolError as e:
                raise self._broken(e) from None
            if size > LOG_FRAME_CAP and not isinstance(msg, _LARGE_OPS[body[:_PREFIX]]):
                raise self._broken(ProtocolError(
                    f"a control frame of {human_size(size)} that is not what it begins as"))
            if isinstance(msg, frames.Log):
                self._log.add(msg.text)
            elif isinstance(msg, frames.Failed):
                raise self._failed(msg)
            else:
                yield msg

    def _over(self, budget: _Budget) -> FragmentFailure:
        self._usable = False
        self._ch.kill()
        return FragmentFailure(f"{budget.what} exceeded {human_size(budget.limit)}",
                               FailureKind.LIMIT, log=self._log.text())

    def _failed(self, msg: frames.Failed) -> FragmentFailure:
        """The runtime reports a failure. Its `kind` is a claim by code the user controls:
        `infra` (or anything unknown) would make the platform retry the user's fault, so
        only user, data and limit are believed; the rest are the user's."""
        try:
            kind = FailureKind(msg.kind)
        except ValueError:
            kind = FailureKind.INFRA
        if kind in (FailureKind.INFRA, FailureKind.LIMIT):
            self._usable = False  # runtime state is suspect after these
        if kind == FailureKind.INFRA:
            kind = FailureKind.USER
        message = msg.message if msg.message.strip() else "the sandbox reported a failure " \
            "without a message"
        if message == "out of memory":
            message = out_of_memory(self._limits.memory)
        return FragmentFailure(message, kind, traceback=msg.traceback, log=self._log.text())

    def _conformed(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """A read's batch as the output takes it: dictionary columns decoded, and the
        declared columns exactly (the runtime conforms them; the host checks)."""
        want = self._declared
        if want is not None and (batch.schema.names != want.names or any(
                a.type != b.type for a, b in zip(batch.schema, want, strict=True))):
            raise self._broken(ProtocolError(
                f"rows do not have the declared columns: got {batch.schema}"))
        return frames.plain(batch)

    def _take_log(self) -> str:
        text, self._log = self._log.text(), LogBuffer()
        return self._redact(text)

    # --- the Session protocol -------------------------------------------------------

    def start(self, credentials: str | None) -> None:
        # Every failure and log that leaves this session is redacted from here on.
        self._redact = Redactor(credentials)
        try:
            self._start(credentials)
        except FragmentFailure as e:
            raise self._redact.failure(e) from None

    def _start(self, credentials: str | None) -> None:
        spec = self._connector.spec
        # display_dir: tracebacks name the connector's own files, not the sandbox's copy
        self._send("open", module_dir=self._module_dir, display_dir=str(self._connector.path),
                   credentials=credentials,
                   parser=spec.parser.model_dump(), schema=spec.schema_.model_dump())
        for item in self._frames(self._deadline(), frames.OpenReply,
                                 _Budget(0, "output", counts_control=False, arrow=False)):
            if isinstance(item, frames.Ready):
                return
            raise self._broken(ProtocolError(f"expected 'ready', got {_what(item)}"))

    def list(self) -> Listing:
        try:
            return self._list()
        except FragmentFailure as e:
            raise self._redact.failure(e) from None

    def _list(self) -> Listing:
        self._check_fence()
        self._send("list")
        batches: list[pa.RecordBatch] = []
        # The host holds a listing whole (to diff it): what it may bring is the operator's.
        max_bytes, max_fragments = settings().max_listing_bytes, settings().max_listed_fragments
        budget = _Budget(max_bytes, "listing", counts_control=False)
        count = 0
        for item in self._frames(self._deadline(), frames.ListReply, budget):
            if isinstance(item, pa.RecordBatch):
                if not item.schema.equals(LISTING_SCHEMA):
                    raise self._broken(ProtocolError(
                        f"listing batch has the wrong shape: {item.schema}"))
                count += item.num_rows
                if count > max_fragments:
                    self._usable = False
                    self._ch.kill()
                    raise FragmentFailure(
                        f"list_objects yielded more than {max_fragments:,} fragments (the "
                        "operator's limit, CONNECTOR_MAX_LISTED_FRAGMENTS)",
                        FailureKind.LIMIT, log=self._log.text())
                batches.append(item)
                continue
            self._take_log()
            return Listing.from_batches(batches)
        raise AssertionError("unreachable: _frames ends only by raising")

    def read(self, fragment: Fragment) -> _ReadStream:
        return _ReadStream(self, fragment)

    def read_many(self, fragments: Iterable[Fragment],
                  window: int = PIPELINE) -> Iterator[tuple[Fragment, _ReadStream | None]]:
        """Reads in a row, pipelined: the request for the next fragment goes out before
        this one's stream is handed over, so the runtime parses it while the caller is
        still writing this one (no idle round trip between fragments, and many small
        fragments cost one round trip's latency in all, not one each).

        `fragments` is pulled lazily, at most `window` ahead; a shared iterator can stop
        the run by stopping to yield. Each stream must be consumed before the next pair
        is taken. A fragment whose request went out but whose turn came after the
        session broke is yielded with None: it never started.
        """
        it = iter(fragments)
        pending: deque[_ReadStream] = deque()

        def fill() -> None:
            while len(pending) < max(1, window) and self._usable:
                fragment = next(it, None)
                if fragment is None:
                    return
                pending.append(_ReadStream(self, fragment, send_now=True))

        current: _ReadStream | None = None
        try:
            fill()
            while pending:
                current = pending.popleft()
                if not self._usable and current.sent:
                    yield current.fragment, None
                    continue
                fill()
                yield current.fragment, current
        finally:
            # Requests still unanswered (the caller stopped early): their frames would
            # be read as the next request's, so this runtime cannot be reused.
            if any(x.sent and not x.finished for x in (current, *pending) if x is not None):
                self.abandon()

    # --- one read, in two verbs (what read() and read_many() are built from) ---------

    def request_read(self, fragment: Fragment) -> None:
        """Send the read request for `fragment`; raises a (redacted) FragmentFailure."""
        if not self._usable:
            raise FragmentFailure("sandbox session is no longer usable", FailureKind.INFRA)
        try:
            self._check_fence()
            self._send("read", fragment=fragment.metadata())
        except FragmentFailure as e:
            raise self._redact.failure(e) from None

    def read_reply(self) -> Iterator[pa.RecordBatch | ReadReport]:
        """The answer to the oldest request not yet answered: its batches (conformed),
        then its ReadReport. A failure is raised redacted. A consumer that stops early
        leaves frames in flight, so the session is abandoned."""
        if not self._usable:
            raise FragmentFailure("sandbox session is no longer usable", FailureKind.INFRA)
        answered = False
        budget = _Budget(self._limits.max_output_bytes, "output")
        try:
            for item in self._frames(self._deadline(), frames.ReadReply, budget):
                if isinstance(item, pa.RecordBatch):
                    yield self._conformed(item)
                    continue
                assert isinstance(item, frames.Read)
                answered = True
                yield ReadReport(rows=item.rows, read=item.read, rejected=item.rejected,
                                 defaulted=item.defaulted, rejects=item.rejects,
                                 warnings=[self._redact(w) for w in item.warnings],
                                 log=self._take_log())
                return
        except FragmentFailure as e:
            self._take_log()
            answered = True
            raise self._redact.failure(e) from None
        finally:
            if not answered:
                self.abandon()

    def abandon(self) -> None:
        """Frames are in flight that nobody will read: this runtime cannot be reused."""
        self._usable = False
        self._ch.kill()

    def close(self) -> None:
        if self._usable:
            with contextlib.suppress(OSError):
                self._ch.send(encode_json({"op": "close"}))
        self._usable = False
        self._ch.kill()


class _ReadStream:
    """One fragment's read, driven through FramedSession's public read verbs."""

    def __init__(self, session: FramedSession, fragment: Fragment,
                 send_now: bool = False) -> None:
        self._s = session
        self.fragment = fragment
        self.report: ReadReport | None = None
        self.sent = False
        self.finished = False  # answered: `done` or an error frame
        self._send_error: FragmentFailure | None = None
        if send_now:
            self._request()

    def _request(self) -> None:
        try:
            self._s.request_read(self.fragment)
            self.sent = True
        except FragmentFailure as e:
            self._send_error = e

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if not self.sent and self._send_error is None:
            self._request()
        if self._send_error is not None:
            raise self._send_error
        replies = self._s.read_reply()
        try:
            for item in replies:
                if isinstance(item, ReadReport):
                    self.report = item
                    self.finished = True
                    return
                yield item
        except FragmentFailure:
            self.finished = True
            raise
        finally:
            replies.close()  # a consumer that stopped early: read_reply abandons the session
