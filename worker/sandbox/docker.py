"""The Docker sandbox: the runtime in a hardened container built for the connector.

Hardening is the default, not an option: no network, read-only root, a small tmpfs
for /tmp, every capability dropped, no-new-privileges, a non-root user, pids, memory
(swap included) and CPU limits, and no log driver (we read stdout ourselves, and a
json-file log would grow without bound). Nothing from the host is mounted: the code is
a layer of the image. Credentials cross once, over the attached stdin.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from worker.models import FailureKind, FragmentFailure
from worker.sandbox.session import FramedSession, human_size
from worker.spec import Connector

LABEL = "io.connector.sandbox"
LABEL_OWNER = "io.connector.owner"
CODE_DIR = "/opt/connector"
SANDBOX_USER = "10001:10001"
TMPFS = "size=64m,mode=1777,noexec,nosuid,nodev"
STDERR_CAP = 64 << 10
_MUX = struct.Struct(">BxxxL")


def owner_id() -> str:
    """Who started a container: reaping only touches containers whose owner is dead."""
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerSource:
    """`ByteSource` over an attached container socket: undoes Docker's stream
    multiplexing (8-byte headers), keeping stdout for frames and a bounded stderr."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._raw = bytearray()
        self._out = bytearray()
        self.stderr = bytearray()

    def _pump(self, deadline: float | None) -> None:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise TimeoutError
        ready, _, _ = select.select([self._sock], [], [], wait)
        if not ready:
            raise TimeoutError
        data = self._sock.recv(1 << 20)
        if not data:
            raise EOFError
        raw = self._raw
        raw += data
        pos = 0
        while len(raw) - pos >= 8:
            kind, size = _MUX.unpack_from(raw, pos)
            if len(raw) - pos - 8 < size:
                break
            payload = raw[pos + 8: pos + 8 + size]
            pos += 8 + size
            if kind == 1:
                self._out += payload
            elif kind == 2 and len(self.stderr) < STDERR_CAP:
                self.stderr += payload[: STDERR_CAP - len(self.stderr)]
        del raw[:pos]

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        while len(self._out) < n:
            self._pump(deadline)
        out = bytes(self._out[:n])
        del self._out[:n]
        return out


class DockerChannel:
    def __init__(self, client: docker.DockerClient, image: str, connector: Connector,
                 labels: dict[str, str]) -> None:
        self._client = client
        self._api = client.api
        limits = connector.spec.limits
        self._memory = limits.memory
        host_config = self._api.create_host_config(
            network_mode="none" if limits.network == "none" else egress_network(client),
            read_only=True,
            tmpfs={"/tmp": TMPFS},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=limits.memory,
            memswap_limit=limits.memory,
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            log_config=LogConfig(type="none"),
            runtime=limits.runtime if limits.runtime != "runc" else None,
            ipc_mode="private",
            init=False,
        )
        spec = connector.spec
        container = self._api.create_container(
            image,
            command=["python", "-m", "worker.runtime"],
            stdin_open=True,
            tty=False,
            user=SANDBOX_USER,
            working_dir="/tmp",
            environment={"HOME": "/tmp", "OPENBLAS_NUM_THREADS": "1"},
            labels={LABEL: "1", LABEL_OWNER: owner_id(), "io.connector.tenant": spec.tenant,
                    "io.connector.name": spec.name, **labels},
            host_config=host_config,
            network_disabled=limits.network == "none",
        )
        self.id: str = container["Id"]
        try:
            # Attach before start, or the runtime's first bytes can be lost.
            sock = self._api.attach_socket(self.id, params={
                "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._sock: socket.socket = sock._sock  # the raw socket under SocketIO
            self._api.start(self.id)
        except BaseException:
            self.kill()
            raise
        self._sock.setblocking(True)
        self.source = DockerSource(self._sock)
        self._killed = False
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self._sock.close()
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._api.remove_container(self.id, force=True)
        self._killed = True

    def exit_reason(self) -> tuple[str, FailureKind]:
        try:
            self._api.wait(self.id, timeout=10)
            state = self._api.inspect_container(self.id)["State"]
        except docker.errors.NotFound:
            return "container was removed while running", FailureKind.INFRA
        except Exception as e:  # engine gone, wait timed out
            self.kill()
            return f"container stopped answering: {e}", FailureKind.INFRA
        code = state.get("ExitCode")
        err = bytes(self.source.stderr).decode("utf-8", "replace").strip()
        tail = f": {err.splitlines()[-1]}" if err else ""
        if state.get("OOMKilled") or "MemoryError" in err:
            return f"out of memory (limit {human_size(self._memory)})", FailureKind.LIMIT
        return f"container exited {code}{tail}", FailureKind.USER


def egress_network(client: docker.DockerClient) -> str:
    """The network for connectors that opted into egress (see worker/sandbox/egress.py)."""
    from worker.sandbox.egress import ensure_egress_network

    return ensure_egress_network(client)


class DockerSandbox:
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None,
                 labels: dict[str, str] | None = None) -> None:
        self.client = client or docker.from_env(timeout=120)
        self.labels = labels or {}
        self._images: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        reap(self.client)

    def image_for(self, connector: Connector) -> str:
        from worker.images import ImageBuildError, build_connector_image

        key = (str(connector.path), connector.code_hash)
        with self._lock:
            if key not in self._images:
                try:
                    self._images[key] = build_connector_image(self.client, connector)
                except ImageBuildError as e:
                    raise FragmentFailure(str(e), FailureKind.USER) from None
            return self._images[key]

    def open(self, connector: Connector, credentials: str | None) -> FramedSession:
        image = self.image_for(connector)
        try:
            channel = DockerChannel(self.client, image, connector, self.labels)
        except docker.errors.DockerException as e:
            raise FragmentFailure(f"container could not start: {e}", FailureKind.INFRA) from None
        session = FramedSession(channel, connector, CODE_DIR)
        try:
            session.start(credentials)
        except BaseException:
            session.close()
            raise
        return session


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's container: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def reap(client: docker.DockerClient, everything: bool = False) -> int:
    """Remove sandbox containers left by dead owners (a killed worker or work horse):
    a container outlives the process that started it unless someone removes it."""
    n = 0
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        labels: dict[str, Any] = c.get("Labels") or {}
        if everything or not _owner_alive(str(labels.get(LABEL_OWNER, ""))):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
                n += 1
    return n
