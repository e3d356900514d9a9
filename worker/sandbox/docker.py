"""The Docker sandbox: the runtime in a hardened container built for the connector.

Hardening is the default, not an option: no network (unless `limits.network` opts into
the fenced egress bridge, egress.py, or an allowlist, which gets a fenced network of
its own per session, netallow.py, removed with the container), read-only root, a small tmpfs
for /tmp, every capability dropped, no-new-privileges, a seccomp profile, a non-root
user, pids, memory (swap included) and CPU limits, and no log driver (we read stdout
ourselves, and a json-file log would grow without bound). Nothing from the host is
mounted (the code is a layer of the image) but the session's own socket directory,
read-only (session_socket.py), unless a developer runs `connector test/refresh
--mount`: then those folders too, read-only. Frames, credentials among them, cross over
that socket, or over the attached stdin/stdout where the engine cannot connect a host
socket (gVisor, a remote engine): see links.py.

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

Containers still running when the worker's interpreter exits are removed (atexit). A
worker killed outright cannot remove them, but they do not run on: the runtime sees its
link to the worker close (the session socket; or the attached stdin, which the engine
closes when the attach ends, `StdinOnce`) and ends the user's processes and itself
(worker/runtime/warden.py), so tini exits and the container stops. The stopped
containers and their session directories are left to `reap`, which runs whenever a
sandbox starts.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from worker import naming
from worker.models import FailureKind, FragmentFailure
from worker.protocol import ByteSource
from worker.sandbox import session_socket
from worker.sandbox.base import runtime_cpus
from worker.sandbox.exits import classify_exit
from worker.sandbox.links import AttachLink, Link, SocketLink
from worker.sandbox.mounts import Mount
from worker.sandbox.session import FramedSession
from worker.settings import settings
from worker.spec import Connector, Limits, NetworkAllow

if TYPE_CHECKING:
    from worker.sandbox.firewall import Fence
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
        # checked by the session before every listing and read (firewall.Fence)
        self.fence = (self._allow.fence() if self._allow is not None
                      else egress_fence() if egress else None)
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
        self._socket = (session_socket.SessionSocket()
                        if uses_session_socket(self._client, limits.runtime) else None)
        binds = {str(m.host): {"bind": m.container, "mode": "ro"} for m in mounts}
        command = runtime_command(runtime_cpus(limits.cpus))
        if self._socket is not None:
            binds.update(self._socket.bind())
            command += ["--connect", self._socket.container_path]
        try:
            self._create_container(image, connector, labels, network_mode, networked,
                                   binds, command)
        except BaseException:
            if self._socket is not None and not hasattr(self, "id"):
                self._socket.close()
            raise

    def _create_container(self, image: str, connector: Connector, labels: dict[str, str],
                          network_mode: str, networked: bool,
                          binds: dict[str, dict[str, str]], command: list[str]) -> None:
        limits = connector.spec.limits
        attached = self._socket is None  # frames over the attach stream
        host_config = hardened_host_config(
            self._api, limits,
            network_mode=network_mode,
            tmpfs={"/tmp": TMPFS, SCRATCH_DIR: scratch_tmpfs(limits.memory)},
            sysctls=egress_sysctls() if networked else None,
            extra_hosts=(self._allow.extra_hosts or None) if self._allow else None,
            binds=binds or None,
        )
        spec = connector.spec
        container = self._api.create_container(
            image,
            command=command,
            stdin_open=attached,
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
                "stdin": int(attached), "stdout": int(attached), "stderr": 1, "stream": 1})
            attach: socket.socket = sock._sock  # the raw socket under SocketIO
            attach.setblocking(True)
            self._link: Link = AttachLink(attach) if attached else SocketLink(attach)
            self._api.start(self.id)
        except BaseException:
            self.kill()
            raise
        if isinstance(self._link, SocketLink):
            self._connect(self._link, settings().sandbox_connect_timeout)
        self.source: ByteSource = self._link.source

    def _connect(self, link: SocketLink, timeout: float) -> None:
        """Take the runtime's one connection to the session socket; a runtime that
        does not connect within `timeout`, or ends first, fails the open. No user code
        has run yet: this is the platform's start-up (interpreter, imports), so the
        operator's setting bounds it, not the connector's `limits.timeout`."""
        assert self._socket is not None
        container_id = self.id
        try:
            link.connected(self._socket.accept(
                time.monotonic() + timeout, link.ended.is_set,
                lambda conn: session_socket.container_peer_problem(conn, container_id)))
        except session_socket.NotConnected as e:
            refused = (f" (refused {len(e.refused)} connection(s) from outside the "
                       f"container: {'; '.join(e.refused[:3])})" if e.refused else "")
            if e.timed_out:
                self.kill()
                raise FragmentFailure(
                    f"container runtime did not connect to its session socket within "
                    f"{timeout:g} s{refused}", FailureKind.INFRA) from None
            msg, kind = self.exit_reason()
            self.kill()
            raise FragmentFailure(f"{msg} (before connecting to its session socket)",
                                  kind) from None
        except BaseException:
            self.kill()
            raise

    def send(self, data: bytes) -> None:
        self._link.send(data)

    def kill(self) -> None:
        if hasattr(self, "_link"):
            self._link.close()
        CONTAINERS.remove(self._api, self)
        if self._socket is not None:
            self._socket.close()  # the container (the mount's user) is gone
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
        stderr = self._link.stderr()
        if code == 2 and not stderr.strip() and self._runtime == "runsc" and not state.get(
                "OOMKilled"):
            # gVisor's sentry (Go) dies with 2 when it cannot get host threads: under the
            # ptrace platform user processes cost host processes in the same pids limit.
            return (f"container exited 2: the gVisor sandbox died (a fork bomb or too many "
                    f"threads for the pids limit of {self._pids} does this)"), FailureKind.USER
        return classify_exit("container", code, stderr, self._memory,
                             oom_killed=bool(state.get("OOMKilled")))


def runtime_command(cpus: int) -> list[str]:
    """The container's command: the sandbox runtime (worker/runtime/main.py)."""
    return ["python", "-m", "worker.runtime", "--user-python", USER_PYTHON,
            "--cpus", str(cpus)]


_DEFAULT_RUNTIMES: weakref.WeakKeyDictionary[docker.DockerClient, str] = (
    weakref.WeakKeyDictionary())


def engine_runtime(client: docker.DockerClient, runtime: str) -> str:
    """The OCI runtime a container of `limits.runtime` gets: `runc` means the engine's
    default, which an operator may have made runsc (asked once per client)."""
    if runtime != "runc":
        return runtime
    if client not in _DEFAULT_RUNTIMES:
        _DEFAULT_RUNTIMES[client] = str(client.api.info().get("DefaultRuntime") or "runc")
    return _DEFAULT_RUNTIMES[client]


def uses_session_socket(client: docker.DockerClient, runtime: str) -> bool:
    """Frames over a session socket (links.SocketLink) unless the operator chose the
    attach stream, the runtime is gVisor (its sandbox does not connect host unix
    sockets by default) or the engine is not on this machine (it would bind-mount its own
    machine's directory)."""
    return (settings().docker_link == "socket"
            and client.api.base_url == "http+docker://localhost"
            and engine_runtime(client, runtime) != "runsc")


def hardened_host_config(api: docker.APIClient, limits: Limits, *, network_mode: str,
                         tmpfs: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The container wall every run of tenant code gets (refresh sessions and the
    build's import check): read-only root, no capabilities, no-new-privileges, the
    seccomp profile, the connector's memory (swap included), CPU and pids, no log."""
    return api.create_host_config(
        network_mode=network_mode, read_only=True, tmpfs=tmpfs, cap_drop=["ALL"],
        security_opt=["no-new-privileges", f"seccomp={SECCOMP}"],
        mem_limit=limits.memory, memswap_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9), pids_limit=limits.pids,
        log_config=LogConfig(type="none"),
        runtime=limits.runtime if limits.runtime != "runc" else None,
        ipc_mode="private", init=True, **extra)


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


def egress_fence() -> Fence:
    from worker.sandbox.egress import fence

    return fence()


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
        # One lock per connector version, not one for the sandbox: a tenant's build that
        # takes minutes holds up only callers wanting that same image (and build_once
        # makes builders of one tag wait for each other across processes).
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        reap(self.client)

    def image_for(self, connector: Connector) -> str:
        """The connector's image tag, built if missing (FragmentFailure if it cannot be)."""
        with self.leased_image(connector) as image:
            return image

    @contextlib.contextmanager
    def leased_image(self, connector: Connector) -> Iterator[str]:
        """`image_for`, leased until the block ends (worker/images/lease.py): a prune
        elsewhere leaves it alone until the container that runs it exists."""
        from worker.images import ImageBuildError
        from worker.images.connector import leased_connector_image
        from worker.images.lease import lease
        from worker.images.once import image_exists

        key = (str(connector.path), connector.code_hash)
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with contextlib.ExitStack() as leases:
            # The lock covers finding or building the image; the lease outlives it, so
            # sessions of one version start side by side.
            with lock:
                image = self._images.get(key)
                if image is not None:
                    leases.enter_context(lease(image))
                    # the host's image store may have pruned a version not run for a while
                    if not image_exists(self.client, image):
                        leases.close()
                        image = None
                if image is None:
                    try:
                        image = leases.enter_context(
                            leased_connector_image(self.client, connector))
                    except ImageBuildError as e:
                        # the build says whose fault it is: a pin whose import exceeds
                        # the connector's limits is `limit`, one that does not resolve
                        # `user`
                        raise FragmentFailure(str(e), e.kind) from None
                    self._images[key] = image
            yield image

    def open(self, connector: Connector, credentials: str | None) -> FramedSession:
        with self.leased_image(connector) as image:
            try:
                CONTAINERS.retry_unremoved()
                channel = DockerChannel(self.client, image, connector, self.labels,
                                        self.mounts)
            except (docker.errors.DockerException, requests.exceptions.RequestException,
                    session_socket.SocketUnavailable) as e:
                # RequestException: the engine's socket is gone (engine stopped, restarting)
                raise FragmentFailure(f"container could not start: {e}",
                                      FailureKind.INFRA) from None
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
    their allowlist networks and rules and their session directories: a container
    outlives the process that started it unless someone removes it."""
    from worker.sandbox import netallow

    n = 0
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        labels: dict[str, Any] = c.get("Labels") or {}
        if everything or not _owner_alive(str(labels.get(LABEL_OWNER, ""))):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
                n += 1
    # then the per-session networks and firewall rules those containers left behind,
    # and their session socket directories
    netallow.reap(client, _owner_alive, everything)
    session_socket.reap(lambda pid: not everything and _owner_alive(
        f"{socket.gethostname()}:{pid}"))
    return n
