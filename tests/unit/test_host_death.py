"""Nothing a connector started outlives the host that started it (process sandbox).

The host here is `connector refresh` (a worker runs the same sessions): it is SIGKILLed
while the connector's code lingers in context(), list_objects or read_bytes, and the
sandbox runtime and every process the user's code started, escaped into sessions of
their own included, must be gone soon after, not run on for the code's ten minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_connector
from tests.helpers.lingering import (
    SPEC,
    alive,
    assert_all_end,
    cmdline,
    kill_all,
    lingering_code,
    marked,
    runtime_pid,
)
from tests.helpers.wait import wait_until

AFTER = "the host died"
ESCAPEES = {"child", "session", "daemon", "popen"}


@pytest.fixture
def marks(tmp_path: Path):
    folder = tmp_path / "marks"
    folder.mkdir()
    yield folder
    pids = list(marked(folder).values())
    if any(p.startswith("user-") for p in os.listdir(folder)):
        pids.append(runtime_pid(folder))
    kill_all(pids)


def start_refresh(tmp_path: Path, folder: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CONNECTOR_OUTPUT": str(tmp_path / "out")}
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "refresh", str(folder), "--sandbox",
         "process", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)


def lingering(tmp_path: Path, marks: Path, phase: str, *, busy: bool = False,
              escape: bool = False, own_session: bool = False, extra_spec: str = ""
              ) -> tuple[subprocess.Popen, int, dict[str, int]]:
    """The refresh, once the connector's code lingers in `phase`: (host, runtime pid,
    the marked user processes)."""
    folder = write_connector(tmp_path / "c", lingering_code(marks, phase, busy, escape,
                                                            own_session),
                             SPEC.format(name="linger", extra=extra_spec))
    host = start_refresh(tmp_path, folder)
    expected = {"user"} | (ESCAPEES if escape else set())

    def all_marked() -> dict[str, int] | None:
        found = marked(marks)
        if {name.rsplit("-", 1)[0] for name in found} >= expected:
            return found
        assert host.poll() is None, host.communicate()[1].decode()
        return None

    procs = wait_until(all_marked, 60, f"the connector's code never lingered in {phase}",
                       interval=0.1)
    runtime = runtime_pid(marks)
    assert "worker.runtime" in cmdline(runtime), cmdline(runtime)
    assert all(alive(pid) for pid in procs.values()), procs
    return host, runtime, procs


@pytest.mark.parametrize("phase, busy", [("context", False), ("list", True),
                                         ("read", False)])
def test_a_killed_host_leaves_no_connector_code_running(tmp_path, marks, phase, busy):
    host, runtime, procs = lingering(tmp_path, marks, phase, busy=busy)
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert_all_end({"runtime": runtime, **procs}, AFTER)


def test_processes_that_escaped_into_sessions_of_their_own_end_with_a_killed_host(
        tmp_path, marks):
    host, runtime, procs = lingering(tmp_path, marks, "read", escape=True)
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert_all_end({"runtime": runtime, **procs}, AFTER)


def test_a_timed_out_read_leaves_no_escaped_process_running(tmp_path, marks):
    host, runtime, procs = lingering(tmp_path, marks, "read", escape=True,
                                     extra_spec="limits: {timeout: 3}\n")
    _, err = host.communicate(timeout=120)
    assert host.returncode == 1, err.decode()
    assert "timed out after 3 s" in err.decode(), err.decode()
    assert_all_end({"runtime": runtime, **procs}, "the read timed out")


def test_a_runtime_killed_outright_takes_the_user_process_with_it(tmp_path, marks):
    # The OOM killer, or a host's last resort: the runtime gets no chance to end what
    # is under it, and the user process has left its process group.
    host, runtime, procs = lingering(tmp_path, marks, "read", own_session=True)
    os.kill(runtime, signal.SIGKILL)
    _, err = host.communicate(timeout=120)
    assert "sandbox process killed by SIGKILL" in err.decode(), err.decode()
    assert_all_end(procs, "the runtime was killed")
