"""The CLI's command list, and what a local command loads before it runs.

Queue-mode commands are registered by name and imported when used, so a local
`connector test` or `refresh` does not pay for the queue's client libraries (Redis, RQ)
at start-up; the commands must still be listed and run as before.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_command() -> None:
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for name in ("build", "deploy", "refresh", "show", "status", "test", "validate", "worker"):
        assert f"  {name} " in r.stdout, (name, r.stdout)


def test_queue_commands_run_by_name() -> None:
    for name, option in (("deploy", "--credentials-ref"), ("status", "--tenant"),
                         ("worker", "--concurrency")):
        r = _run(name, "--help")
        assert r.returncode == 0, (name, r.stderr)
        assert option in r.stdout, (name, r.stdout)


def test_local_commands_do_not_load_the_queue_clients() -> None:
    code = ("import sys, worker.cli; "
            "print(sorted(m for m in ('redis', 'rq') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
