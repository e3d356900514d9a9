"""A host process that races a container to its session socket gets nothing.

The worker's uid can reach the socket from the host side (a process-sandbox connector's
code runs as that uid), and whoever the host accepts first is sent the session's open
frame, credentials included. Here the impostor is a thread of this test that connects
the moment the socket appears; the container's runtime starts two seconds late.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE
from worker.models import FragmentFailure
from worker.sandbox import docker as docker_sandbox
from worker.sandbox import session_socket
from worker.sandbox.docker import DockerSandbox
from worker.spec import load_connector

pytestmark = pytest.mark.docker

SECRET = "impostor-bait-7f3a9c"


def _session_dirs() -> set[Path]:
    root = session_socket.sessions_root()
    return {d for d in root.iterdir() if d.name.startswith(f"{os.getpid()}-")}


class Impostor:
    """A host process (a thread of this test, same uid as the worker) that connects to
    the next new session socket as soon as it appears, and keeps what it is sent."""

    def __init__(self, before: set[Path]) -> None:
        self.before = before
        self.connected = threading.Event()
        self.received = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for d in _session_dirs() - self.before:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(d / session_socket.SOCKET_NAME))
                except OSError:
                    s.close()
                    continue
                self.connected.set()
                s.settimeout(10)
                try:
                    while chunk := s.recv(1 << 16):
                        self.received += chunk
                except OSError:
                    pass
                s.close()
                return
            time.sleep(0.001)

    def join(self) -> None:
        self._thread.join(40)


def test_a_host_process_that_connects_first_gets_nothing_and_the_runtime_still_does(
        connector, monkeypatch) -> None:
    name = f"peer{uuid.uuid4().hex[:6]}"
    conn = load_connector(connector(ECHO_CODE, f"name: {name}\nlimits: {{timeout: 60}}\n"
                                    "credentials: {file: secret.txt}\n",
                                    files={"secret.txt": SECRET}))
    box = DockerSandbox()
    box.image_for(conn)
    # The runtime starts 2 s late, so the impostor is surely first at the socket.
    real = docker_sandbox.runtime_command
    monkeypatch.setattr(docker_sandbox, "runtime_command",
                        lambda cpus: ["sh", "-c", 'sleep 2; exec "$@"', "sh", *real(cpus)])
    impostor = Impostor(_session_dirs())
    failure: FragmentFailure | None = None
    try:
        session = box.open(conn, conn.read_credentials())
    except FragmentFailure as e:
        failure = e
    impostor.join()
    assert impostor.connected.is_set()
    # the host hung up on it without a byte: no open frame, no credentials
    assert SECRET.encode() not in impostor.received
    assert impostor.received == b"", impostor.received[:200]
    assert failure is None, str(failure)
    try:
        # and the container's runtime, connecting after it, got the session
        [fragment] = list(session.list())
        assert sum(b.num_rows for b in session.read(fragment)) == 1
    finally:
        session.close()
