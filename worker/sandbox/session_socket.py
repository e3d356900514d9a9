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
ENOENT. The directory stays as the mount's source until the container is gone, then
`close()` removes it; `reap()` removes those of owners that died without closing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CONTAINER_DIR = "/run/connector"
SOCKET_NAME = "sock"
# How often the accept loop looks up to see whether the container died meanwhile.
POLL_S = 0.05


class SocketUnavailable(Exception):
    """The session socket cannot be set up safely here (a hijacked root, no space)."""


class NotConnected(Exception):
    """No connection came: the deadline passed, or `gone()` said the container ended."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("timed out" if timed_out else "container ended")
        self.timed_out = timed_out


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

    def accept(self, deadline: float, gone: Callable[[], bool]) -> socket.socket:
        """The one connection (blocking); then nobody can connect again. Raises
        NotConnected past `deadline` (monotonic) or once `gone()` is true."""
        listener = self._listener
        if listener is None:
            raise NotConnected(timed_out=False)
        try:
            while True:
                if gone():
                    raise NotConnected(timed_out=False)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NotConnected(timed_out=True)
                ready, _, _ = select.select([listener], [], [], min(POLL_S, left))
                if ready:
                    conn, _ = listener.accept()
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
