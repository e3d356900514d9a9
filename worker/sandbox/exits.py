"""Why a runtime ended, in words a user can act on, for every sandbox back end.

A back end knows how its runtime ended (an exit code or a signal, what it wrote to
stderr, whether the kernel's OOM killer struck); what that means is decided here once,
so the process and Docker sandboxes name the same cause the same way.
"""

from __future__ import annotations

import signal

from worker.models import FailureKind
from worker.sandbox.sizes import human_size

# What Python and C++ (pyarrow) write to stderr when an allocation fails.
MEMORY_ERRORS = ("MemoryError", "std::bad_alloc")


def out_of_memory(limit: int) -> str:
    return f"out of memory (limit {human_size(limit)})"


def classify_exit(what: str, code: int | None, stderr: bytes | str, memory: int,
                  oom_killed: bool = False) -> tuple[str, FailureKind]:
    """`what` ("sandbox process", "container") ended with `code` (negative: killed by
    that signal). Out of memory is a limit; anything else is the user's code ending,
    shown with the last line it wrote to stderr."""
    err = (stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr).strip()
    if oom_killed or any(m in err for m in MEMORY_ERRORS):
        return out_of_memory(memory), FailureKind.LIMIT
    tail = f": {err.splitlines()[-1]}" if err else ""
    if code is not None and code < 0:
        return f"{what} killed by {signal.Signals(-code).name}{tail}", FailureKind.USER
    return f"{what} exited {code}{tail}", FailureKind.USER
