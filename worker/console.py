"""What the command line prints: the two consoles, exit codes, and failure reports.

Local and queue-mode commands report failures the same way, so they share this.

Everything a tenant controls (fragment names, fingerprints, values, messages, logs,
tracebacks) is printed as literal text: `literal` escapes control characters (ESC
sequences would drive the operator's terminal; bidi overrides would reorder what is
shown) and `safe` also escapes rich markup, for text embedded in a markup string;
tables and trees take `text` objects, which rich never parses as markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from worker.models import FailedFragment, FailureKind, RefreshSummary

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Tables for stdout. A terminal's width fits them to the screen; into a pipe or a file
# rich would assume 80 columns and cut cells to "…", so there they take the width their
# cells need (a script or a log loses no character; `--jsonl`/`--json` parse better).
tables = out if out.is_terminal else Console(soft_wrap=True, width=1 << 16)
EXIT_OK, EXIT_FAILED, EXIT_BAD = 0, 1, 2


def literal(value: object, lines: bool = False) -> str:
    """`value` as text with every non-printable character escaped as Python would
    (`\\x1b`, `\\u202e`, lone surrogates too); newlines and tabs kept when `lines`."""
    text = str(value)
    if text.isprintable():
        return text
    keep = "\n\t" if lines else ""
    return "".join(ch if ch.isprintable() or ch in keep
                   else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)


def safe(value: object) -> str:
    """Literal text to embed in a rich markup string."""
    return escape(literal(value))


def text(value: object, style: str = "") -> Text:
    """Literal text as a rich renderable (table cells, tree labels, titles)."""
    return Text(literal(value), style=style)


def print_failure(what: str, kind: FailureKind, message: str, traceback: str = "",
                  log: str = "", tail: int = 4000) -> None:
    """`what failed (kind): message`, then the user's traceback and the log's tail."""
    err.print(f"[red]{safe(what)} failed ({kind}):[/red] {safe(message)}", highlight=False)
    if traceback:
        err.print(literal(traceback.rstrip()[-tail:], lines=True), markup=False,
                  highlight=False)
    if log:
        err.print("[dim]log:[/dim]")
        err.print(literal(log.rstrip()[-tail:], lines=True), markup=False, highlight=False)


def print_failures(failures: list[FailedFragment], tail: int = 4000) -> None:
    for f in failures:
        print_failure(f.what, f.kind, f.message, f.traceback, f.log, tail)


def print_summary(name: str, s: RefreshSummary) -> None:
    out.print(f"{safe(name)}: listed {s.listed}, read {s.read}, skipped {s.skipped}, "
              + (f"recovered {s.recovered} (read by an unfinished refresh), "
                 if s.recovered else "")
              + f"deleted {s.deleted}, failed {s.failed}, rows {s.rows}"
              + (f", rejected {s.rejected}" if s.rejected else "")
              + (f", defaulted {s.defaulted}" if s.defaulted else ""))
    for w in s.warnings:
        err.print(f"[yellow]warning:[/yellow] {safe(w)}", highlight=False)
