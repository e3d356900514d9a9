"""A container session's private data socket: a listening unix socket that the
container's runtime connects to once, so frames bypass the Docker engine's copies.

Each session gets a directory of its own, `<root>/<owner pid>-<random>`, holding one
socket, `sock`. The container bind-mounts that directory (only it) read-only at
`CONTAINER_DIR`: connect() works on a socket on a read-only mount, but nothing in the
container can create, rename or remove anything there, and no other session's directory
is visible. `root` is private to this user (0700), so no other local user reaches a
socket from the host side; the session directory is 0711 and the socket 0666 only so
that the container's unprivileged user can traverse to it and connect.

The runtime connects first thing, before it starts the user's process (no user code has
run in the container yet), and the host accepts exactly one connection: the listener is
closed and the socket unlinked right after, so user code that later tries the path gets
ENOENT. That one connection must come from inside the container: the peer's pid
(SO_PEERCRED, taken when it connected) must be a process of the container's cgroup. A
host process of the worker's uid can reach the socket too (a process-sandbox
connector's code runs as that uid), and whoever is accepted first is sent the session's
credentials; a connection from anywhere else is hung up on before a byte is sent, named
in the log, and the host keeps waiting for the runtime's. The directory stays as the
mount's source until the container is gone, then `close()` removes it; `reap()` removes
those of owners that died without closing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import shutil
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CONTAINER_DIR = "/run/connector"
SOCKET_NAME = "sock"
# How often the accept loop looks up to see whether the container died meanwhile.
POLL_S = 0.05


class SocketUnavailable(Exception):
    """The session socket cannot be set up safely here (a hijacked root, no space)."""


class NotConnected(Exception):
    """No connection came: the deadline passed, or `gone()` said the container ended.
    `refused`: why each connection that did come was hung up on."""

    def __init__(self, timed_out: bool, refused: list[str] | None = None) -> None:
        super().__init__("timed out" if timed_out else "container ended")
        self.timed_out = timed_out
        self.refused = refused or []


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as this pid namespace sees it
    (pid 0: a process this namespace cannot see)."""
    pid, uid, gid = _PEERCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


def container_peer_problem(conn: socket.socket, container_id: str) -> str | None:
    """Why the peer of `conn` is not a process of container `container_id`, or None.
    Its cgroup names the container under every cgroup driver and version (cgroupfs:
    `/docker/<id>`, systemd: `docker-<id>.scope`), as this host's cgroup namespace shows
    it."""
    pid, uid, _ = peer_credentials(conn)
    who = f"pid {pid} (uid {uid})"
    if pid <= 0:
        return (f"{who}: a process in a pid namespace this worker cannot see (a worker "
                "that does not share the engine's pid namespace needs "
                "CONNECTOR_DOCKER_LINK=attach)")
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return f"{who} ended before it could be checked"
    if container_id not in cgroups:
        return f"{who} is not a process of container {container_id[:12]}"
    return None


def sessions_root() -> Path:
    """`<tmp>/connector-sessions-<uid>`, created 0700 and checked to be ours: /tmp is
    shared, and a directory someone else made (or a symlink) there is refused."""
    root = Path(tempfile.gettempdir()) / f"connector-sessions-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise SocketUnavailable(f"{root} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root


class SessionSocket:
    """One session's directory and listening socket (see the module docstring)."""

    def __init__(self) -> None:
        try:
            root = sessions_root()
            self.dir = root / f"{os.getpid()}-{secrets.token_hex(8)}"
            os.mkdir(self.dir, 0o700)
        except OSError as e:
            raise SocketUnavailable(f"cannot create a session directory: {e}") from None
        self.path = self.dir / SOCKET_NAME
        self._listener: socket.socket | None = socket.socket(socket.AF_UNIX,
                                                             socket.SOCK_STREAM)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # Through the directory's descriptor: a socket path is limited to 107 bytes,
            # and TMPDIR may be deeper than that.
            self._listener.bind(f"/proc/self/fd/{dir_fd}/{SOCKET_NAME}")
            self._listener.listen(1)
            os.chmod(SOCKET_NAME, 0o666, dir_fd=dir_fd)
            os.chmod(self.dir, 0o711)  # traversable, not listable, not writable
        except OSError as e:
            self.close()
            raise SocketUnavailable(f"cannot listen in {self.dir}: {e}") from None
        except BaseException:
            self.close()
            raise
        finally:
            os.close(dir_fd)

    @property
    def container_path(self) -> str:
        return f"{CONTAINER_DIR}/{SOCKET_NAME}"

    def bind(self) -> dict[str, dict[str, str]]:
        """docker-py `binds` entry: this directory, read-only, at CONTAINER_DIR."""
        return {str(self.dir): {"bind": CONTAINER_DIR, "mode": "ro"}}

    def accept(self, deadline: float, gone: Callable[[], bool],
               check: Callable[[socket.socket], str | None] | None = None) -> socket.socket:
        """The one connection (blocking); then nobody can connect again. `check(conn)`
        says why a connection is not the one awaited (it is closed unanswered and the
        wait goes on), or None. Raises NotConnected past `deadline` (monotonic) or once
        `gone()` is true."""
        listener = self._listener
        if listener is None:
            raise NotConnected(timed_out=False)
        refused: list[str] = []
        try:
            while True:
                if gone():
                    raise NotConnected(timed_out=False, refused=refused)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotConnected(timed_out=True, refused=refused)
                ready, _, _ = select.select([listener], [], [], min(POLL_S, left))
                if not ready:
                    continue
                conn, _ = listener.accept()
                problem = check(conn) if check is not None else None
                if problem is not None:
                    log.warning("session socket %s: refused a connection: %s", self.path,
                                problem)
                    refused.append(problem)
                    conn.close()
                    continue
                conn.setblocking(True)
                return conn
        finally:
            self._stop_listening()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        """Stop listening and remove the directory (call once the container is gone)."""
        self._stop_listening()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(alive: Callable[[int], bool] = _pid_alive) -> int:
    """Remove the session directories of owners that are no longer running."""
    root = Path(tempfile.gettempdir()) / f"connector-sessions-{os.getuid()}"
    n = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for d in entries:
        pid, _, _ = d.name.partition("-")
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n
