"""A local refresh the user stops with Ctrl-C: its run record says so, with what was
kept, and the next refresh's counts account for every listed fragment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.unit.test_first_use import ctrl_c_refresh


@pytest.fixture
def interrupted(connector, cli: Cli, tmp_path: Path) -> tuple[Path, int]:
    """A connector folder whose refresh kept some of its 30 fragments (0 to 2) before
    Ctrl-C, its code then made fast; and how many it said it kept."""
    c, kept = ctrl_c_refresh(connector, cli.output, tmp_path)
    fast = c / "connector.py"
    fast.write_text(fast.read_text().replace("time.sleep(600)", "pass"))
    return c, kept


def _status_row(cli: Cli, c: Path, status: str) -> list[str]:
    r = cli("status", str(c))
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if f" {status} " in ln]
    assert len(rows) == 1, r.stdout
    return [cell for cell in rows[0] if cell not in "│┃"]


def test_an_interrupted_refresh_is_recorded_as_interrupted_with_what_it_kept(
        interrupted, cli):
    # id, status, started (date time), seconds, listed, read, skipped, ..., rows
    c, kept = interrupted
    row = _status_row(cli, c, "interrupted")
    listed, read, skipped, recovered, deleted, failed, rows = row[5:12]
    assert (listed, read, failed, rows) == ("30", str(kept), "0", str(kept)), row


def test_the_next_refresh_reports_the_kept_fragments_as_recovered(interrupted, cli):
    c, kept = interrupted
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["listed"], s["read"], s["recovered"], s["skipped"]) == (30, 30 - kept, kept,
                                                                        0), s
    assert s["read"] + s["recovered"] + s["skipped"] + s["failed"] == s["listed"]
    row = _status_row(cli, c, "ok")
    # listed, read, skipped, recovered
    assert row[5:9] == ["30", str(30 - kept), "0", str(kept)], row
    r = cli("refresh", str(c), "--sandbox", "process")
    assert "recovered" not in r.stdout and "skipped 30" in r.stdout, r.stdout
