"""Pick a sandbox back end by name, or the safest one this machine can run."""

from __future__ import annotations

from worker.sandbox.base import Sandbox
from worker.sandbox.process import ProcessSandbox

PROCESS_WARNING = ("using the process sandbox: user code runs on this machine without "
                   "isolation; it is not for untrusted code")


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def get_sandbox(name: str | None) -> Sandbox:
    if name == "process":
        return ProcessSandbox()
    if name == "docker" or (name is None and docker_available()):
        from worker.sandbox.docker import DockerSandbox

        return DockerSandbox()
    if name is not None:
        raise ValueError(f"unknown sandbox {name!r}: use docker or process")
    return ProcessSandbox()
