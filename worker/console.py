"""What the command line prints: the two consoles, exit codes, and failure reports.

Local and queue-mode commands report failures the same way, so they share this."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from worker.models import FailedFragment, FailureKind, RefreshSummary

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2


def print_failure(what: str, kind: FailureKind, message: str, traceback: str = "",
                  log: str = "", tail: int = 4000) -> None:
    """`what failed (kind): message`, then the user's traceback and the log's tail."""
    err.print(f"[red]{escape(what)} failed ({kind}):[/red] {escape(message)}", highlight=False)
    if traceback:
        err.print(traceback.rstrip()[-tail:], markup=False, highlight=False)
    if log:
        err.print("[dim]log:[/dim]")
        err.print(log.rstrip()[-tail:], markup=False, highlight=False)


def print_failures(failures: list[FailedFragment], tail: int = 4000) -> None:
    for f in failures:
        print_failure(f"fragment {f.name!r}", f.kind, f.message, f.traceback, f.log, tail)


def print_summary(name: str, s: RefreshSummary) -> None:
    out.print(f"{name}: listed {s.listed}, read {s.read}, skipped {s.skipped}, "
              f"deleted {s.deleted}, failed {s.failed}, rows {s.rows}"
              + (f", rejected {s.rejected}" if s.rejected else "")
              + (f", defaulted {s.defaulted}" if s.defaulted else ""))
    for w in s.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
