"""The process sandbox: the runtime as a child process with rlimits.

The runtime runs on this interpreter (the project's environment); the connector's code
runs in its child, the user process, on the connector's own venv (its pins over the
default packages, built once per set of pins: worker/userenv/venv.py). Both processes
get the memory limit (RLIMIT_AS is per process).

For local development and trusted code: it keeps user code out of the worker process
and bounds memory and time, but shares the host's filesystem and network. Untrusted
code belongs in the Docker sandbox. What the user's code starts, in sessions of its own
too, ends with the session or the worker (worker/runtime/warden.py), though with no
pids limit here. `limits.network` is not enforced here (a
process cannot be fenced per connector without root): a connector with an allowlist
runs with a warning, never with a pretended fence.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from worker.errors import ConfigError, ConnectorError
from worker.models import FailureKind, FragmentFailure
from worker.sandbox.base import runtime_cpus
from worker.sandbox.exits import classify_exit
from worker.sandbox.mounts import Mount
from worker.sandbox.readahead import ReadAhead
from worker.sandbox.session import FramedSession
from worker.spec import Connector, NetworkAllow
from worker.userenv.venv import user_python

PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# Address-space slack over the memory limit: the interpreter, pyarrow and their
# shared libraries map ~250 MiB of virtual memory before user code allocates a byte.
AS_SLACK = 384 << 20
# How long a hung-up runtime gets to end the user's processes before its group is killed.
HANG_UP_GRACE_S = 5.0


def unenforced_network(connector: Connector) -> str | None:
    """The warning for a connector whose network allowlist this sandbox cannot enforce."""
    network = connector.spec.limits.network
    if not isinstance(network, NetworkAllow):
        return None
    return (f"limits.network.allow is not enforced by the process sandbox: "
            f"{connector.spec.name} runs with this machine's network, not only "
            f"{', '.join(network.allow)}; use the Docker sandbox to fence it")


class ProcessChannel:
    fence = None  # this machine's network, unfenced (see unenforced_network)

    def __init__(self, connector: Connector, user_python: str) -> None:
        limits = connector.spec.limits
        self._memory = limits.memory
        self._home = tempfile.TemporaryDirectory(prefix="connector-")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": PROJECT_ROOT,
            "HOME": self._home.name,
            "TMPDIR": self._home.name,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            # jemalloc/mimalloc reserve large address ranges; the system allocator
            # lets RLIMIT_AS mean roughly "memory".
            "ARROW_DEFAULT_MEMORY_POOL": "system",
            "OPENBLAS_NUM_THREADS": "1",
        }
        mem = limits.memory + AS_SLACK

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "worker.runtime", "--user-python", user_python,
             "--cpus", str(runtime_cpus(limits.cpus))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=str(connector.path), env=env, preexec_fn=limit, start_new_session=True,
        )
        assert self._proc.stdout and self._proc.stdin and self._proc.stderr
        self.source = ReadAhead.over_fd(self._proc.stdout.fileno(), "runtime-stdout")
        self._stderr = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self._proc.stderr
        for line in self._proc.stderr:
            if len(self._stderr) < 64 << 10:
                self._stderr += line

    def send(self, data: bytes) -> None:
        assert self._proc.stdin
        self._proc.stdin.write(data)
        self._proc.stdin.flush()

    def kill(self) -> None:
        """Hang up on the runtime, which then ends everything the user's code started,
        escaped into sessions of its own or not (worker/runtime/warden.py), as it does
        when this process dies; the process group's SIGKILL comes after, for a runtime
        that did not end within HANG_UP_GRACE_S (killing it first would orphan what
        left the group)."""
        self.source.close()
        for f in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                f and f.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=HANG_UP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._home.cleanup()

    def exit_reason(self) -> tuple[str, FailureKind]:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "sandbox process stopped answering", FailureKind.INFRA
        return classify_exit("sandbox process", code, bytes(self._stderr), self._memory)


class ProcessSandbox:
    name = "process"

    def __init__(self, mounts: Sequence[Mount] = ()) -> None:
        for m in mounts:
            if str(m.host) != m.container:
                raise ConfigError(
                    f"--mount {m.host}:{m.container}: the process sandbox sees this "
                    f"machine's files as they are, so {m.container} would not be "
                    f"{m.host} there; mount it at the same path ({m.host}:{m.host}) or "
                    "use the Docker sandbox")

    def open(self, connector: Connector, credentials: str | None) -> FramedSession:
        try:
            python = user_python(connector)
        except ConnectorError as e:
            raise FragmentFailure.of(e) from None
        return FramedSession.started(ProcessChannel(connector, python), connector,
                                     str(connector.path), credentials)
