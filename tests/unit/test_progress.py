"""`connector refresh` shows progress on a terminal and nothing when piped or --json."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from tests.conftest import ROOT
from tests.helpers.connectors import PlanConnector


def run_on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """stderr on a pseudo-terminal (as a user's shell has it), stdout piped."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        seen += data
    out = p.stdout.read() if p.stdout else b""
    os.close(master)
    return p.wait(timeout=120), out.decode(), seen.decode("utf-8", "replace")


def test_progress_on_a_terminal_quiet_otherwise(cli, tmp_path):
    plan = PlanConnector(tmp_path, "plan", "default")
    c = plan.folder
    plan.set({f"f{i}": {"fp": "1", "rows": [i, i + 10]} for i in range(4)})
    env = {**os.environ, "CONNECTOR_OUTPUT": str(cli.output), "COLUMNS": "160",
           "TERM": "xterm"}
    code, out, term = run_on_terminal(["refresh", str(c), "--sandbox", "process"], env)
    assert code == 0, term
    assert "refreshing plan" in term and "rows" in term and "fragments" in term
    assert "rows 8" in out  # the summary line

    plan.set({f"g{i}": {"fp": "1", "rows": [i]} for i in range(2)})
    code, out, term = run_on_terminal(["refresh", str(c), "--sandbox", "process", "--json"],
                                      env)
    assert code == 0, term
    assert "refreshing" not in term  # --json: no bar, even on a terminal
    r = cli("refresh", str(c), "--sandbox", "process")  # piped
    assert "refreshing" not in r.stderr and "\x1b[" not in r.stderr
