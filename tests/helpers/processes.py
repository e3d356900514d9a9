"""Process groups: a worker parent started in its own session and its children."""

from __future__ import annotations

from pathlib import Path


def group_pids(pgid: int) -> set[int]:
    """Live processes of a process group (the worker parent and its children)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.add(int(stat.parent.name))
    return pids
