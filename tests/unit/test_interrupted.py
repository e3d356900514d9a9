"""A local refresh the user stops with Ctrl-C: its run record says so, with what was
kept, and the next refresh's counts account for every listed fragment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.unit.test_first_use import ctrl_c_refresh


@pytest.fixture
def interrupted(connector, cli: Cli, tmp_path: Path) -> Path:
    """A connector folder whose refresh read 2 of 30 fragments before Ctrl-C, its code
    then made fast."""
    c, _ = ctrl_c_refresh(connector, cli.output, tmp_path)
    fast = c / "connector.py"
    fast.write_text(fast.read_text().replace("time.sleep(600)", "pass"))
    return c


def _status_row(cli: Cli, c: Path, status: str) -> list[str]:
    r = cli("status", str(c))
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if f" {status} " in ln]
    assert len(rows) == 1, r.stdout
    return [cell for cell in rows[0] if cell not in "│┃"]


def test_an_interrupted_refresh_is_recorded_as_interrupted_with_what_it_kept(
        interrupted, cli):
    # id, status, started (date time), seconds, listed, read, skipped, ..., rows
    row = _status_row(cli, interrupted, "interrupted")
    listed, read, skipped, recovered, deleted, failed, rows = row[5:12]
    assert (listed, read, failed, rows) == ("30", "2", "0", "2"), row


def test_the_next_refresh_reports_the_kept_fragments_as_recovered(interrupted, cli):
    r, s = cli.refresh(interrupted)
    assert r.returncode == 0, r.stderr
    assert (s["listed"], s["read"], s["recovered"], s["skipped"]) == (30, 28, 2, 0), s
    assert s["read"] + s["recovered"] + s["skipped"] + s["failed"] == s["listed"]
    row = _status_row(cli, interrupted, "ok")
    assert row[5:9] == ["30", "28", "0", "2"], row  # listed, read, skipped, recovered
    r = cli("refresh", str(interrupted), "--sandbox", "process")
    assert "recovered" not in r.stdout and "skipped 30" in r.stdout, r.stdout
