"""The in-memory sandbox: a connector's functions as Python callables, run in this process.

Like httpx's MockTransport, it stands in for the real back ends where what is under test
is the host's side of the seam: the refresh (diff, commits, deletions, failures, warm
sessions replaced when they break), not the runtime. It isolates nothing and parses
nothing, so it is for tests only:

- `list_objects(context, metadata)` is the user's contract: dicts with `name`,
  `fingerprint` and optionally `is_prefix` (expanded by calling it again, to any depth).
- `read_bytes(context, metadata)` yields what the runtime would have made of the bytes:
  rows (dicts) or Arrow record batches.
- `context(credentials)` runs once per session, as in a real sandbox.

An exception from a function fails the call as a user error, named as the runtime
names it; a `FragmentFailure` raised by a function is passed on as it is, and one of
kind infra or limit leaves the session unusable, as a crashed or killed runtime would.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from worker.listing import Listing
from worker.models import FailureKind, Fragment, FragmentFailure, ReadReport
from worker.protocol import listing_batch
from worker.spec import Connector

ListFn = Callable[[Any, dict[str, Any]], Iterable[Mapping[str, Any]]]
ReadFn = Callable[[Any, dict[str, Any]], Iterable[pa.RecordBatch | Mapping[str, Any]]]
ContextFn = Callable[[str], Any]
_BREAKS_SESSION = (FailureKind.INFRA, FailureKind.LIMIT)


class MemorySandbox:
    name = "memory"

    def __init__(self, list_objects: ListFn, read_bytes: ReadFn,
                 context: ContextFn | None = None) -> None:
        self.list_objects, self.read_bytes, self.context = list_objects, read_bytes, context
        self.sessions: list[MemorySession] = []  # every session opened, in order

    def open(self, connector: Connector, credentials: str | None) -> MemorySession:
        ctx: Any = {}
        if (fn := self.context) is not None:
            ctx = _call(lambda: fn(credentials or ""), "context()")
        session = MemorySession(self, ctx)
        self.sessions.append(session)
        return session


class MemorySession:
    def __init__(self, sandbox: MemorySandbox, context: Any) -> None:
        self._box = sandbox
        self.context = context
        self.closed = False
        self._usable = True

    @property
    def usable(self) -> bool:
        return self._usable and not self.closed

    def list(self) -> Listing:
        objects: list[dict[str, Any]] = []
        self._expand({}, "{}", objects)
        return Listing.from_batches([listing_batch(objects)] if objects else [])

    def _expand(self, metadata: dict[str, Any], where: str,
                out: list[dict[str, Any]]) -> None:
        listed = self.guard(lambda: list(self._box.list_objects(self.context, metadata)),
                            f"list_objects({where})")
        for obj in listed:
            try:
                fragment = Fragment.model_validate(obj)
            except ValidationError as e:
                raise FragmentFailure(f"list_objects({where}) yielded {obj!r}: "
                                      f"{e.errors()[0]['msg']}") from None
            if fragment.is_prefix:
                self._expand(fragment.metadata(), repr(fragment.name), out)
            else:
                out.append(dict(obj))

    def read(self, fragment: Fragment) -> MemoryStream:
        return MemoryStream(self, fragment)

    def read_many(self, fragments: Iterable[Fragment]
                  ) -> Iterator[tuple[Fragment, MemoryStream | None]]:
        # Nothing is pipelined: a fragment is taken only once the last one was consumed,
        # and none once the session broke.
        for fragment in fragments:
            yield fragment, self.read(fragment)
            if not self.usable:
                return

    def close(self) -> None:
        self.closed = True

    def read_rows(self, fragment: Fragment, where: str
                  ) -> Iterator[pa.RecordBatch | Mapping[str, Any]]:
        """What `read_bytes` yields for `fragment`, each step guarded."""
        meta = fragment.metadata()
        items = iter(self.guard(lambda: self._box.read_bytes(self.context, meta), where))
        while (item := self.guard(lambda: next(items, None), where)) is not None:
            yield item

    def guard(self, call: Callable[[], Any], where: str) -> Any:
        """Run a user function in this session (see the module docstring for failures)."""
        if not self.usable:
            raise FragmentFailure("sandbox session is no longer usable", FailureKind.INFRA)
        try:
            return _call(call, where)
        except FragmentFailure as e:
            if e.kind in _BREAKS_SESSION:
                self._usable = False
            raise


class MemoryStream:
    """One fragment's batches, produced as they are consumed (as a real read streams)."""

    def __init__(self, session: MemorySession, fragment: Fragment) -> None:
        self._s = session
        self.fragment = fragment
        self.report: ReadReport | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        rows = 0
        pending: list[Mapping[str, Any]] = []
        for item in self._s.read_rows(self.fragment, f"read_bytes({self.fragment.name!r})"):
            if isinstance(item, pa.RecordBatch):
                if pending:
                    rows += len(pending)
                    yield pa.RecordBatch.from_pylist(pending)
                    pending = []
                rows += item.num_rows
                yield item
            else:
                pending.append(item)
        if pending:
            rows += len(pending)
            yield pa.RecordBatch.from_pylist(pending)
        self.report = ReadReport(rows=rows, read=rows)


def _call(call: Callable[[], Any], where: str) -> Any:
    """Run a user function; its exception becomes a user failure naming `where`."""
    try:
        return call()
    except FragmentFailure:
        raise
    except Exception as e:
        raise FragmentFailure(f"{where} raised {type(e).__name__}: {e}", FailureKind.USER,
                              traceback=traceback.format_exc()) from None
