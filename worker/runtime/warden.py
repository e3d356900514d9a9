"""Nothing the connector's code starts outlives the runtime, or the host it serves.

- `become_subreaper()`: the runtime is the child subreaper of every process under it,
  so a user process that double-forks, or starts a program in a session of its own,
  leaves an orphan that is re-parented to the runtime, not to init. Process groups and
  sessions can be left at will (`os.setsid`); ancestry through the runtime cannot.
- `end_descendants()`: SIGKILL every child, reap it, and again, until none is left: the
  children of a killed process come to the runtime as their parent dies.
- `watch_host(in_fd, out_fd)`: a thread that waits for the host's end of the protocol
  link to close, then ends every descendant and the runtime itself at once.

Why a watching thread: the host link is read only between ops. While the user's code
sleeps or spins in read_bytes, list_objects or context(), the runtime's main thread is
blocked on the user process's pipe, and a killed worker would be noticed at the next
frame, which may never come. The thread blocks in poll() with no events asked for, so
it costs nothing until the link hangs up: on a pipe the input's POLLHUP (no writer
left) or the output's POLLERR (no reader left), on the session socket POLLRDHUP/POLLHUP.
The kernel closes the host's descriptors whichever way it dies, SIGKILL included.

Not chosen: PR_SET_PDEATHSIG from the runtime to the host fires when the host *thread*
that spawned the runtime exits, and a worker spawns sessions from lane threads that end
before the session does; it would also leave escaped grandchildren running. A killed
process group misses whatever called setsid(). A cgroup per session would catch
everything but needs root or a delegated cgroup tree, which the process sandbox does
not have; the Docker sandbox has one (the container), and there this watch is what
makes the container stop when its worker is gone (see worker/sandbox/docker.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import stat
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
# The runtime's exit code when the watch ends it (the main thread, seeing the user
# process or the link end meanwhile, may exit first with its own; nobody is left to
# read either).
HOST_GONE = 3
_END_WITHIN_S = 10.0


def become_subreaper() -> bool:
    """Orphans below this process become its children (Linux >= 3.4; False elsewhere,
    and under engines without it, where the container's pid namespace is the wall)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """Pids whose parent is this process (zombies included: they are reaped too)."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def end_descendants() -> None:
    """SIGKILL and reap every process under this one. A process's children are
    re-parented here when it dies (the subreaper), so rounds repeat until no child is
    left; a fork bomb's rounds are bounded by time, not to hang an exiting runtime."""
    deadline = time.monotonic() + _END_WITHIN_S
    while (kids := children()) and time.monotonic() < deadline:
        for pid in kids:
            # PermissionError: a setuid program the user's code ran (process sandbox);
            # it is waited for until the deadline, never forever
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap(set(kids), deadline)


def _reap(pids: set[int], deadline: float) -> None:
    while pids and time.monotonic() < deadline:
        for pid in list(pids):
            try:
                ended = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # reaped by its Popen meanwhile
                ended = True
            if ended:
                pids.discard(pid)
        if pids:
            time.sleep(0.005)


def watch_host(in_fd: int, out_fd: int) -> None:
    """End everything, this process included, as soon as the host's end of the link
    (a pipe each way, or one socket) closes."""
    poller = select.poll()
    hangup = select.POLLHUP | select.POLLERR
    if stat.S_ISSOCK(os.fstat(in_fd).st_mode):
        poller.register(in_fd, select.POLLRDHUP)
        hangup |= select.POLLRDHUP
    else:
        poller.register(in_fd, 0)  # POLLHUP: the host's write end is closed
        poller.register(out_fd, 0)  # POLLERR: the host's read end is closed

    def watch() -> None:
        while True:
            events = poller.poll()
            if any(ev & hangup for _, ev in events):
                break
            if any(ev & select.POLLNVAL for _, ev in events):
                return  # this process closed the link itself: it is exiting anyway
        end_descendants()
        os._exit(HOST_GONE)

    threading.Thread(target=watch, name="host-watch", daemon=True).start()
