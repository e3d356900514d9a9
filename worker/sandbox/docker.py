"""The Docker sandbox: the runtime in a hardened container built for the connector.

Hardening is the default, not an option: no network (unless `limits.network` opts into
the fenced egress bridge, egress.py, or an allowlist, which gets a fenced network of
its own per session, netallow.py, removed with the container), read-only root, a small tmpfs
for /tmp, every capability dropped, no-new-privileges, a seccomp profile, a non-root
user, pids, memory (swap included) and CPU limits, and no log driver (we read stdout
ourselves, and a json-file log would grow without bound). Nothing from the host is
mounted (the code is a layer of the image) unless a developer runs `connector
test/refresh --mount`: then those folders, read-only. Credentials cross once, over the
attached stdin.

The seccomp profile (seccomp.json) is Docker's default (moby/profiles v0.2.3) with
`ptrace` removed and no `io_uring_*` syscalls: io_uring has been the source of a run of
kernel privilege escalations and bypasses seccomp filtering of the operations it
performs, and nothing a connector does needs to trace a process. gVisor (runsc)
applies its own syscall surface and ignores an OCI seccomp profile unless runsc runs
with `--oci-seccomp`.

Scratch space: `TMPDIR` is a second tmpfs, `/scratch`, as large as the memory limit
(tmpfs pages count against the container's memory cgroup, so it adds no memory a
connector could not already use). The runtime spools a Parquet fragment there: a
fragment larger than the 64 MiB /tmp must not fail with "No space left on device".

PID 1 is Docker's init (tini, the engine's read-only `docker-init`), not the runtime:
the kernel ignores signals a namespace's init sends itself, so without it a runtime that
SIGKILLs itself would keep running under runc (and die under gVisor), and orphans of
user code would never be reaped and would eat the pids limit of a warm session. With
tini the runtime is an ordinary process: it dies like one ("container exited 137"),
and when it exits tini exits and the kernel kills everything left in the container.

The host never buffers more of the runtime's output than the read-ahead's bound
(`ReadAhead` over `DockerDemux`): user code can write to the protocol's file descriptor,
and a forged header announcing a 500 MiB frame must not make the worker hold 500 MiB
before the cap is checked.
Containers still running when the worker's interpreter exits are removed (atexit); a
worker killed outright leaves them to `reap`, which runs whenever a sandbox starts.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import json
import os
import socket
import struct
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from worker import naming
from worker.models import FailureKind, FragmentFailure
from worker.sandbox.base import runtime_cpus
from worker.sandbox.exits import classify_exit
from worker.sandbox.mounts import Mount
from worker.sandbox.readahead import ReadAhead
from worker.sandbox.session import FramedSession
from worker.spec import Connector, NetworkAllow

if TYPE_CHECKING:
    from worker.sandbox.netallow import AllowSession

LABEL = "io.connector.sandbox"
LABEL_OWNER = "io.connector.owner"
CODE_DIR = "/opt/connector"
USER_PYTHON = "/opt/user/bin/python"  # the user environment (see worker/images.py)
SANDBOX_USER = "10001:10001"
TMPFS = "size=64m,mode=1777,noexec,nosuid,nodev"
SCRATCH_DIR = "/scratch"
SECCOMP = json.dumps(json.loads(
    (importlib.resources.files("worker.sandbox") / "seccomp.json").read_text()),
    separators=(",", ":"))
STDERR_CAP = 64 << 10
_MUX = struct.Struct(">BxxxL")


class Containers:
    """The sandbox containers of this process: those running (removed at exit: user
    code may still run in them), and those whose removal failed because the engine did
    not answer (stopped or restarting), removed by the next `open` and at exit rather
    than left to another worker's `reap`, which spares containers of a live owner."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[DockerChannel] = weakref.WeakSet()
        self._unremoved: dict[str, docker.APIClient] = {}

    def add(self, channel: DockerChannel) -> None:
        self._live.add(channel)

    def remove(self, api: docker.APIClient, channel: DockerChannel) -> None:
        """Remove the channel's container now, or remember it if the engine is away."""
        self._remove(api, channel.id)
        self._live.discard(channel)

    def _remove(self, api: docker.APIClient, container_id: str) -> bool:
        try:
            api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            self._unremoved[container_id] = api
            return False
        self._unremoved.pop(container_id, None)
        return True

    def retry_unremoved(self) -> None:
        for container_id, api in list(self._unremoved.items()):
            if not self._remove(api, container_id):
                return  # the engine still does not answer

    def remove_all(self) -> None:
        """The worker is exiting: its containers must not outlive it."""
        for channel in list(self._live):
            channel.kill()
        with contextlib.suppress(Exception):
            self.retry_unremoved()


CONTAINERS = Containers()
atexit.register(CONTAINERS.remove_all)


def owner_id() -> str:
    """Who started a container: reaping only touches containers whose owner is dead."""
    return f"{socket.gethostname()}:{os.getpid()}"


class DockerDemux:
    """Undoes Docker's stream multiplexing (8-byte headers) of an attached container
    socket: `recv()` returns the stdout bytes of one read (for `ReadAhead`), stderr is
    kept, bounded, for the exit reason."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._raw = b""  # undemuxed bytes: a partial mux header or payload
        self.stderr = bytearray()

    def recv(self) -> bytes:
        data = self._sock.recv(1 << 20)
        if not data:
            raise EOFError
        raw = self._raw + data if self._raw else data
        view = memoryview(raw)
        pos = 0
        out: list[memoryview] = []
        while len(raw) - pos >= 8:
            kind, size = _MUX.unpack_from(raw, pos)
            if len(raw) - pos - 8 < size:
                break
            payload = view[pos + 8: pos + 8 + size]
            pos += 8 + size
            if kind == 1:
                out.append(payload)
            elif kind == 2 and len(self.stderr) < STDERR_CAP:
                self.stderr += payload[: STDERR_CAP - len(self.stderr)]
        self._raw = raw[pos:]
        return b"".join(out)


class DockerChannel:
    def __init__(self, client: docker.DockerClient, image: str, connector: Connector,
                 labels: dict[str, str], mounts: Sequence[Mount] = ()) -> None:
        self._client = client
        self._api = client.api
        limits = connector.spec.limits
        self._memory = limits.memory
        self._runtime = limits.runtime
        self._pids = limits.pids
        egress = limits.network == "egress"
        self._allow = allow_network(client, limits.network)
        if self._allow is not None:
            network_mode = self._allow.network
        else:
            network_mode = egress_network(client) if egress else "none"
        try:
            self._create(image, connector, labels, mounts, network_mode)
        except BaseException:
            if self._allow is not None and not hasattr(self, "id"):
                self._allow.close(client)
            raise

    def _create(self, image: str, connector: Connector, labels: dict[str, str],
                mounts: Sequence[Mount], network_mode: str) -> None:
        limits = connector.spec.limits
        networked = network_mode != "none"
        host_config = self._api.create_host_config(
            network_mode=network_mode,
            read_only=True,
            tmpfs={"/tmp": TMPFS, SCRATCH_DIR: scratch_tmpfs(limits.memory)},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={SECCOMP}"],
            mem_limit=limits.memory,
            memswap_limit=limits.memory,
            nano_cpus=int(limits.cpus * 1e9),
            pids_limit=limits.pids,
            log_config=LogConfig(type="none"),
            runtime=limits.runtime if limits.runtime != "runc" else None,
            ipc_mode="private",
            init=True,
            sysctls=egress_sysctls() if networked else None,
            extra_hosts=(self._allow.extra_hosts or None) if self._allow else None,
            binds={str(m.host): {"bind": m.container, "mode": "ro"} for m in mounts} or None,
        )
        spec = connector.spec
        container = self._api.create_container(
            image,
            command=["python", "-m", "worker.runtime", "--user-python", USER_PYTHON,
                     "--cpus", str(runtime_cpus(limits.cpus))],
            stdin_open=True,
            tty=False,
            user=SANDBOX_USER,
            working_dir="/tmp",
            environment={"HOME": "/tmp", "TMPDIR": SCRATCH_DIR, "OPENBLAS_NUM_THREADS": "1",
                         # Arrow sizes its thread pool by the host's CPUs, and threads
                         # count against the pids limit: size it by the CPU limit.
                         "OMP_NUM_THREADS": str(runtime_cpus(limits.cpus)),
                         # no pydantic plugins are installed: skip the entry-point scan
                         "PYDANTIC_DISABLE_PLUGINS": "1"},
            labels={LABEL: "1", LABEL_OWNER: owner_id(),
                    **naming.labels(spec.tenant, spec.name), **labels},
            host_config=host_config,
            network_disabled=not networked,
        )
        self.id: str = container["Id"]
        self._killed = False
        CONTAINERS.add(self)
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
        self._demux = DockerDemux(self._sock)
        self.source = ReadAhead(self._demux.recv, self._sock, name="container-stdout")

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def kill(self) -> None:
        # shutdown() first: close() alone leaves the connection open while the SDK's
        # SocketIO still references the socket, and then a runtime that is writing
        # (an output flood) blocks the engine's attach copy, which blocks the removal
        # below forever: the worker hung at "output exceeded" before this.
        if hasattr(self, "source"):
            self.source.close()
        with contextlib.suppress(Exception):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._sock.close()
        CONTAINERS.remove(self._api, self)
        if self._allow is not None:
            self._allow.close(self._client)  # after the container: never an unfenced one
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
        if state.get("Status") in ("removing", "dead"):
            # Force-removed from outside (an operator, an engine restart): the code it
            # shows then is the kill's 137, not the user's doing; worth a retry.
            return "container was removed while running", FailureKind.INFRA
        code = state.get("ExitCode")
        stderr = bytes(self._demux.stderr)
        if code == 2 and not stderr.strip() and self._runtime == "runsc" and not state.get(
                "OOMKilled"):
            # gVisor's sentry (Go) dies with 2 when it cannot get host threads: under the
            # ptrace platform user processes cost host processes in the same pids limit.
            return (f"container exited 2: the gVisor sandbox died (a fork bomb or too many "
                    f"threads for the pids limit of {self._pids} does this)"), FailureKind.USER
        return classify_exit("container", code, stderr, self._memory,
                             oom_killed=bool(state.get("OOMKilled")))


def scratch_tmpfs(memory: int) -> str:
    """Mount options of /scratch: as large as the memory limit it is charged to."""
    return f"size={memory},mode=1777,noexec,nosuid,nodev"


def egress_network(client: docker.DockerClient) -> str:
    """The network for connectors that opted into egress (see worker/sandbox/egress.py);
    raises `FragmentFailure` when egress cannot be fenced here (never allowed unfenced)."""
    from worker.sandbox.egress import EgressUnavailable, ensure_egress_network

    try:
        return ensure_egress_network(client)
    except EgressUnavailable as e:
        raise FragmentFailure(f"egress refused: {e}", FailureKind.INFRA) from None


def allow_network(client: docker.DockerClient, network: object) -> AllowSession | None:
    """A fenced network of its own for a session of a connector with an allowlist
    (worker/sandbox/netallow.py), or None; FragmentFailure when a name cannot be pinned
    (the user's) or the fence cannot be installed (never started unfenced)."""
    if not isinstance(network, NetworkAllow):
        return None
    from worker.sandbox.netallow import AllowRefused, EgressUnavailable, open_session

    try:
        return open_session(client, network, owner_id())
    except AllowRefused as e:
        raise FragmentFailure(str(e), FailureKind.USER) from None
    except EgressUnavailable as e:
        raise FragmentFailure(f"network allowlist refused: {e}", FailureKind.INFRA) from None


def egress_sysctls() -> dict[str, str]:
    from worker.sandbox.egress import CONTAINER_SYSCTLS

    return dict(CONTAINER_SYSCTLS)


class DockerSandbox:
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None,
                 labels: dict[str, str] | None = None, mounts: Sequence[Mount] = ()) -> None:
        self.client = client or docker.from_env(timeout=120)
        self.labels = labels or {}
        for m in mounts:
            m.check_container()
        self.mounts = tuple(mounts)  # local development only: read-only host folders
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
            CONTAINERS.retry_unremoved()
            channel = DockerChannel(self.client, image, connector, self.labels, self.mounts)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            # RequestException: the engine's socket is gone (engine stopped, restarting)
            raise FragmentFailure(f"container could not start: {e}", FailureKind.INFRA) from None
        return FramedSession.started(channel, connector, CODE_DIR, credentials)


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
    """Remove sandbox containers left by dead owners (a killed worker or work horse),
    and their allowlist networks and rules: a container outlives the process that
    started it unless someone removes it."""
    from worker.sandbox import netallow

    n = 0
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        labels: dict[str, Any] = c.get("Labels") or {}
        if everything or not _owner_alive(str(labels.get(LABEL_OWNER, ""))):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
                n += 1
    # then the per-session networks and firewall rules those containers left behind
    netallow.reap(client, _owner_alive, everything)
    return n
