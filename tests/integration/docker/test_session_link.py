"""The Docker sandbox's session socket against a real engine: user code in the container
cannot reach it, a runtime that never connects cannot hang the host, nothing is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest

from worker.models import FailureKind, FragmentFailure
from worker.sandbox import docker as docker_sandbox
from worker.sandbox import session_socket
from worker.sandbox.docker import LABEL, DockerSandbox, reap
from worker.settings import settings
from worker.spec import load_connector

pytestmark = pytest.mark.docker

# Every way user code might reach the host's end of the protocol: the socket's path, its
# directory (write, list), and the runtime's own descriptor of it (by /proc, by
# pidfd_getfd). Whatever it obtains, it writes a forged frame into.
PROBE = r"""
import ctypes, errno, json, os, socket

FORGED = b"J" + (40).to_bytes(4, "big") + b'{"op":"error","kind":"infra","message":"x"}'[:40]


def err(e):
    return errno.errorcode.get(e.errno, str(e)) if isinstance(e, OSError) else repr(e)


def attempt(fn):
    try:
        got = fn()
    except Exception as e:
        return err(e)
    return "ok" if got is None else got


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/connector/sock")
    s.sendall(FORGED)
    return "connected"


def write_file():
    with open("/run/connector/planted", "w") as f:
        f.write("x")


def bind():
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind("/run/connector/sock")


def runtime_fds():
    # the runtime is the user process's parent; its socket is one of its descriptors
    pid, out = os.getppid(), {}
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:"):
            continue
        try:
            with open(f"/proc/{pid}/fd/{fd}", "wb") as f:
                f.write(FORGED)
            opened = "opened"
        except OSError as e:
            opened = err(e)
        got = libc.syscall(438, pidfd, int(fd), 0) if pidfd >= 0 else -1  # pidfd_getfd
        if got >= 0:
            os.write(got, FORGED)
            taken = "taken"
        else:
            taken = errno.errorcode.get(ctypes.get_errno(), "?")
        out[fd] = [opened, taken]
    return out


def probe():
    return {
        "connect": attempt(connect),
        "list": attempt(lambda: os.listdir("/run/connector")),
        "write": attempt(write_file),
        "mkdir": attempt(lambda: os.mkdir("/run/connector/d")),
        "chmod": attempt(lambda: os.chmod("/run/connector", 0o777)),
        "bind": attempt(bind),
        "sessions_root": os.path.exists(f"/tmp/connector-sessions-{os.getuid()}")
        or os.path.exists("/tmp/connector-sessions-0"),
        "fds": attempt(runtime_fds),
    }


def list_objects(c, m):
    for i in range(2):
        yield {"name": f"probe{i}", "fingerprint": "1"}


def read_bytes(c, m):
    yield json.dumps({"frag": m["name"], "got": json.dumps(probe())}) + "\n"
"""


def test_user_code_cannot_reach_the_session_socket(connector, cli) -> None:
    c = connector(PROBE, "name: sockprobe\nparser: {format: json}\n")
    # two sessions at once: neither sees the other's socket either
    r, s = cli.refresh(c, "--concurrency", "2", sandbox="docker")
    assert r.returncode == 0, r.stderr
    assert s["read"] == 2, s
    for row in cli.rows(c):
        got = json.loads(row["got"])
        assert got["connect"] == "ENOENT", got  # the one connection was the runtime's
        assert got["list"] == "EACCES", got
        for what in ("write", "mkdir", "bind"):
            assert got[what] in ("EROFS", "EACCES"), (what, got)
        assert got["chmod"] in ("EROFS", "EPERM"), got
        assert got["sessions_root"] is False, got
        fds = got["fds"]
        assert isinstance(fds, dict) and fds, got  # the runtime's socket was found...
        for opened, taken in fds.values():  # ...and neither opened nor taken
            assert opened == "ENXIO", got
            assert taken == "EPERM", got


def _containers(name: str) -> list[object]:
    return docker.from_env().containers.list(
        all=True, filters={"label": [LABEL, f"io.connector.name={name}"]})


def _session_dirs() -> list[Path]:
    root = session_socket.sessions_root()
    return [d for d in root.iterdir() if d.name.startswith(f"{os.getpid()}-")]


QUIET = """
def list_objects(c, m):
    yield {"name": "a", "fingerprint": "1"}
def read_bytes(c, m):
    yield "x\\n1\\n"
"""


@pytest.fixture
def quiet_connector(connector):
    def make(timeout: int = 3):
        name = f"quiet{uuid.uuid4().hex[:6]}"
        return load_connector(connector(QUIET, f"name: {name}\nlimits: {{timeout: {timeout}}}\n"))
    return make


@pytest.fixture
def connect_timeout(monkeypatch):
    monkeypatch.setenv("CONNECTOR_SANDBOX_CONNECT_TIMEOUT", "3")
    settings.cache_clear()
    yield
    monkeypatch.delenv("CONNECTOR_SANDBOX_CONNECT_TIMEOUT")
    settings.cache_clear()


def test_runtime_that_never_connects_fails_the_open(quiet_connector, monkeypatch,
                                                   connect_timeout) -> None:
    conn = quiet_connector(timeout=60)
    box = DockerSandbox()
    box.image_for(conn)
    before = _session_dirs()
    # a runtime that never connects (as one whose image was tampered with would)
    monkeypatch.setattr(docker_sandbox, "runtime_command",
                        lambda cpus: ["python", "-c", "import time; time.sleep(600)"])
    with pytest.raises(FragmentFailure) as e:
        box.open(conn, None)
    assert e.value.kind == FailureKind.INFRA
    assert str(e.value) == "container runtime did not connect to its session socket within 3 s"
    assert _containers(conn.spec.name) == []
    assert _session_dirs() == before


def test_runtime_that_dies_before_connecting_says_why(quiet_connector, monkeypatch) -> None:
    conn = quiet_connector(timeout=60)
    box = DockerSandbox()
    box.image_for(conn)
    before = _session_dirs()
    monkeypatch.setattr(docker_sandbox, "runtime_command", lambda cpus: [
        "python", "-c", "import sys; print('no runtime here', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(FragmentFailure) as e:
        box.open(conn, None)
    assert "exited 3" in str(e.value) and "no runtime here" in str(e.value), str(e.value)
    assert "before connecting to its session socket" in str(e.value)
    assert _containers(conn.spec.name) == []
    assert _session_dirs() == before


def test_session_directory_lives_as_long_as_the_session(quiet_connector) -> None:
    conn = quiet_connector(timeout=60)
    box = DockerSandbox()
    before = _session_dirs()
    session = box.open(conn, None)
    try:
        [new] = [d for d in _session_dirs() if d not in before]
        assert os.listdir(new) == []  # the socket is unlinked once the runtime connected
        [container] = _containers(conn.spec.name)
        mounts = container.attrs["Mounts"]  # type: ignore[attr-defined]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in mounts] == [
            (str(new), session_socket.CONTAINER_DIR, False)]
        [fragment] = list(session.list())
        assert sum(b.num_rows for b in session.read(fragment)) == 1
    finally:
        session.close()
    assert not new.exists()
    assert _containers(conn.spec.name) == []


def test_reap_removes_session_directories_of_dead_owners() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = session_socket.sessions_root() / f"{dead}-{uuid.uuid4().hex[:16]}"
    left.mkdir()
    reap(docker.from_env())
    assert not left.exists()
