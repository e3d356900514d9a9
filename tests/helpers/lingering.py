"""A connector whose code never ends on its own, and the processes it leaves.

Every process the connector's code starts writes a file `<tag>-<pid>` (its parent's pid
inside) to a marker folder before it lingers: the test then knows exactly which
processes a dead host must not leave running, the sandbox runtime among them (the
user process's parent).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.helpers.wait import wait_until

# `linger(tag)` marks this process, starts the escapees if asked, and never returns:
# time.sleep, or a busy loop (user code holding a core, no syscall to interrupt).
LINGER_CODE = '''
import os, pathlib, subprocess, sys, time
MARKS = pathlib.Path({marks!r})
PHASE, BUSY, ESCAPE, OWN_SESSION = {phase!r}, {busy!r}, {escape!r}, {own_session!r}

def mark(tag):
    (MARKS / f"{{tag}}-{{os.getpid()}}").write_text(str(os.getppid()))

def forever():
    if BUSY:
        while True:
            pass
    time.sleep(600)

def escape():
    if os.fork() == 0:  # a plain child
        mark("child")
        forever()
    if os.fork() == 0:  # a child in a session of its own
        os.setsid()
        mark("session")
        forever()
    first = os.fork()
    if first == 0:  # a daemon: double fork, its parent gone, so it is nobody's child
        os.setsid()
        if os.fork() == 0:
            mark("daemon")
            forever()
        os._exit(0)
    os.waitpid(first, 0)
    # a program started in a new session, as subprocess users do
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
    (MARKS / f"popen-{{p.pid}}").write_text(str(os.getpid()))

def linger(phase):
    if phase != PHASE:
        return
    if ESCAPE:
        escape()
    if OWN_SESSION:  # out of the runtime's process group
        os.setsid()
    mark("user")
    forever()

def context(credentials):
    linger("context")
    return None

def list_objects(context, metadata):
    linger("list")
    yield {{"name": "one", "fingerprint": "1"}}

def read_bytes(context, metadata):
    linger("read")
    yield "id\\n1\\n"
'''

SPEC = "name: {name}\nschema:\n  - {{name: id, type: int64}}\n{extra}"


def lingering_code(marks: Path, phase: str, busy: bool = False, escape: bool = False,
                   own_session: bool = False) -> str:
    return LINGER_CODE.format(marks=str(marks), phase=phase, busy=busy, escape=escape,
                              own_session=own_session)


def marked(marks: Path) -> dict[str, int]:
    """`<tag>-<pid>` -> pid of every process that marked itself so far."""
    return {p.name: int(p.name.rsplit("-", 1)[1]) for p in marks.iterdir()}


def runtime_pid(marks: Path) -> int:
    """The user process's parent: the sandbox runtime."""
    user = next(p for p in marks.iterdir() if p.name.startswith("user-"))
    return int(user.read_text())


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever inherited it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    return ""


def assert_all_end(pids: dict[str, int], after: str) -> None:
    """Every one of `pids` (name -> pid) ends soon `after` what should end them."""
    wait_until(lambda: not [n for n, p in pids.items() if alive(p)], 15,
               lambda: f"still running after {after}: " + ", ".join(
                   f"{n} ({cmdline(p)})" for n, p in pids.items() if alive(p)))


def kill_all(pids: list[int]) -> None:
    """A failed test's leftovers: they must not sleep on in the next test's way."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
