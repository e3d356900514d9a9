"""Pick a sandbox back end by name, or the safest one this machine can run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.sandbox.base import Sandbox
    from worker.sandbox.mounts import Mount

PROCESS_WARNING = ("using the process sandbox: user code runs on this machine without "
                   "isolation; it is not for untrusted code")


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def get_sandbox(name: str | None, mounts: Sequence[Mount] = ()) -> Sandbox:
    """`mounts` (local development only) are read-only host folders; ConfigError when
    the chosen back end cannot honour them."""
    # Each back end is imported when chosen: the process sandbox brings the user-env
    # machinery, Docker its SDK; `connector test` pays for one of them only.
    if name == "process" or (name is None and not docker_available()):
        from worker.sandbox.process import ProcessSandbox

        return ProcessSandbox(mounts)
    if name == "docker" or name is None:
        from worker.sandbox.docker import DockerSandbox

        return DockerSandbox(mounts=mounts)
    raise ValueError(f"unknown sandbox {name!r}: use docker or process")
