"""Read-only host folders for local development: `--mount HOST:CONTAINER`.

Only `connector test` and a local `connector refresh` take them; queue mode never mounts
anything (workers run deployed code on other machines). The Docker sandbox bind-mounts
each HOST read-only at CONTAINER. The process sandbox already sees this machine's files,
so there a mount must name the same path on both sides, or it is refused: a connector
must not pass locally and then look in the wrong place.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from worker.errors import ConfigError

# Where the image keeps what the sandbox needs: a mount there would hide it.
RESERVED = ("/opt", "/tmp", "/scratch", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib",
            "/lib64", "/etc", "/var", "/run", "/root", "/boot")


class Mount(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: Path        # an existing folder or file on this machine, resolved
    container: str    # absolute path inside the sandbox

    @classmethod
    def parse(cls, text: str) -> Mount:
        host, sep, container = text.rpartition(":")
        where = f"--mount {text!r}"
        if not sep or not host or not container:
            raise ConfigError(f"{where}: expected HOST:CONTAINER, e.g. ./data:/data")
        path = Path(host).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"{where}: {host} does not exist on this machine")
        if not container.startswith("/"):
            raise ConfigError(f"{where}: the container path must be absolute")
        # normpath keeps a leading '//' (POSIX leaves it implementation-defined); Docker
        # reads it as '/', so '//opt' would slip past the reserved check.
        return cls(host=path, container=posixpath.normpath("/" + container.lstrip("/")))

    def check_container(self) -> None:
        """ConfigError if a container path would hide the image's own files."""
        c = self.container
        if c == "/" or any(c == r or c.startswith(r + "/") for r in RESERVED):
            raise ConfigError(f"--mount {self.host}:{c}: {c} is reserved for the sandbox's "
                              "own files; mount under another folder, e.g. /data")
