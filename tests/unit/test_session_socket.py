"""The session socket's host side: one connection, then nobody; a private root; reaping."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from worker.sandbox import session_socket
from worker.sandbox.session_socket import NotConnected, SessionSocket


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path / f"connector-sessions-{os.getuid()}"


def _connect(path: Path) -> socket.socket:
    """Connect as the runtime does, through the directory (pytest's paths are too long
    for a socket address)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        s.connect(f"/proc/self/fd/{fd}/{path.name}")
    except BaseException:
        s.close()
        raise
    finally:
        os.close(fd)
    return s


def test_one_connection_then_none(tmp_root: Path) -> None:
    ss = SessionSocket()
    first = _connect(ss.path)
    conn = ss.accept(time.monotonic() + 5, lambda: False)
    first.sendall(b"hello")
    assert conn.recv(5) == b"hello"
    # a second connect, by path, now finds nothing to connect to
    with pytest.raises(FileNotFoundError):
        _connect(ss.path)
    assert os.listdir(ss.dir) == []
    ss.close()
    assert not ss.dir.exists()
    conn.close()
    first.close()


def test_a_second_connection_queued_before_accept_is_dropped(tmp_root: Path) -> None:
    ss = SessionSocket()
    first = _connect(ss.path)
    second = _connect(ss.path)  # in the backlog when the host accepts
    conn = ss.accept(time.monotonic() + 5, lambda: False)
    second.settimeout(5)
    # the listener closed with it in its queue: the second peer is reset, never served
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        second.sendall(b"x" * (1 << 20))
        second.recv(1)
    for s in (conn, first, second):
        s.close()
    ss.close()


def test_a_connection_from_outside_the_container_is_hung_up_on_and_named(
        tmp_root: Path) -> None:
    ss = SessionSocket()
    impostor = _connect(ss.path)  # this process: not in the container
    container = "f" * 64
    with pytest.raises(NotConnected) as e:
        ss.accept(time.monotonic() + 0.5, lambda: False,
                  lambda c: session_socket.container_peer_problem(c, container))
    assert e.value.timed_out  # it was not taken for the runtime; the wait went on
    assert e.value.refused == [f"pid {os.getpid()} (uid {os.getuid()}) is not a process "
                               f"of container {container[:12]}"]
    impostor.settimeout(5)
    assert impostor.recv(10) == b""  # hung up on, sent nothing
    impostor.close()
    ss.close()


def test_accept_times_out_and_stops_listening(tmp_root: Path) -> None:
    ss = SessionSocket()
    with pytest.raises(NotConnected) as e:
        ss.accept(time.monotonic() + 0.2, lambda: False)
    assert e.value.timed_out
    with pytest.raises(FileNotFoundError):
        _connect(ss.path)
    ss.close()
    assert list(tmp_root.iterdir()) == []


def test_accept_stops_when_the_container_ends(tmp_root: Path) -> None:
    ss = SessionSocket()
    ended = threading.Event()
    threading.Timer(0.1, ended.set).start()
    with pytest.raises(NotConnected) as e:
        ss.accept(time.monotonic() + 60, ended.is_set)
    assert not e.value.timed_out
    ss.close()


def test_directory_modes(tmp_root: Path) -> None:
    ss = SessionSocket()
    assert stat.S_IMODE(os.stat(tmp_root).st_mode) == 0o700  # no other local user
    assert stat.S_IMODE(os.stat(ss.dir).st_mode) == 0o711  # traversable, not listable
    assert ss.bind() == {str(ss.dir): {"bind": session_socket.CONTAINER_DIR, "mode": "ro"}}
    ss.close()


def test_a_root_someone_else_planted_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"connector-sessions-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(session_socket.SocketUnavailable, match="not a directory owned"):
        SessionSocket()
    assert list(elsewhere.iterdir()) == []


def test_reap_removes_dead_owners_directories(tmp_root: Path) -> None:
    mine = SessionSocket()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    left = tmp_root / f"{dead.stdout.strip()}-0123456789abcdef"
    left.mkdir()
    (left / "sock").touch()
    assert session_socket.reap() == 1
    assert not left.exists()
    assert mine.dir.exists()  # a live owner's session is left alone
    mine.close()
