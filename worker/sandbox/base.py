"""The sandbox seam: where user code runs, and the only way the host talks to it.

The cut is here because everything on the other side is untrusted: the user's three
functions, and the parsers that read their bytes. The host hands over a connector and
its credentials once (`open`), then asks for listings and reads; it gets back validated
fragments and Arrow record batches, never Python objects of the user's. A process back
end (rlimits) and a Docker back end (hardened containers) implement it; refresh code
sees only this protocol.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Protocol

import pyarrow as pa

from worker.listing import Listing
from worker.models import Fragment, ReadReport
from worker.spec import Connector


class ReadStream(Protocol):
    """Record batches of one fragment. `report` is set once the iterator is exhausted;
    a failed read raises `FragmentFailure` from the iterator."""

    report: ReadReport | None

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...


class Session(Protocol):
    """One warm runtime for one connector and tenant: context() ran once in it."""

    def list(self) -> Listing:
        """Every readable fragment, prefixes expanded to any depth, in listing order."""
        ...

    def read(self, fragment: Fragment) -> ReadStream: ...

    def read_many(self, fragments: Iterable[Fragment]
                  ) -> Iterator[tuple[Fragment, ReadStream | None]]:
        """Reads in a row, the next request sent before this stream is handed over (see
        FramedSession.read_many); None for a fragment whose turn came after the session
        broke: it never started."""
        ...

    @property
    def usable(self) -> bool:
        """False after a crash, timeout, OOM or protocol error: never reuse it then."""
        ...

    def close(self) -> None: ...


class Sandbox(Protocol):
    name: str

    def open(self, connector: Connector, credentials: str | None) -> Session:
        """Start a runtime, send it the credentials once, run context(); raises
        FragmentFailure (kind user) if context() fails."""
        ...


def runtime_cpus(cpus: float) -> int:
    """The threads a runtime's pools get for a CPU limit (`limits.cpus`, may be 0.5)."""
    return max(1, math.ceil(cpus))
