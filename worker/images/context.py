"""Build contexts and `docker build`: files copied in with normalized modes, the
Dockerfiles from the package's `files/`, builds with no network."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker.folder import FolderFile
from worker.images.errors import ImageBuildError

if TYPE_CHECKING:
    import docker

FILES_DIR = Path(__file__).resolve().parent / "files"


@contextlib.contextmanager
def build_context(kind: str, dockerfile: str, *extra: str) -> Iterator[Path]:
    """A temporary context directory holding `files/<dockerfile>` as its Dockerfile and
    the `extra` files of `files/` under their own names."""
    with tempfile.TemporaryDirectory(prefix=f"{kind}-ctx-") as td:
        ctx = Path(td)
        shutil.copyfile(FILES_DIR / dockerfile, ctx / "Dockerfile")
        for name in extra:
            shutil.copyfile(FILES_DIR / name, ctx / name)
        yield ctx


def copy_files(files: Sequence[FolderFile], dst: Path) -> None:
    """Copy files with normalized modes (dirs 755, files 644 or 755): read-only to others."""
    dst.mkdir(parents=True, exist_ok=True)
    os.chmod(dst, 0o755)
    for f in files:
        target = dst / f.name
        for parent in reversed(target.relative_to(dst).parents):
            d = dst / parent
            if not d.exists():
                d.mkdir()
                os.chmod(d, 0o755)
        target.write_bytes(f.read_bytes())
        os.chmod(target, 0o755 if f.executable else 0o644)


def link_wheels(wheels: Sequence[Path], dst: Path) -> None:
    """The wheels into the context (hard links where the cache shares the file system)."""
    dst.mkdir()
    for w in wheels:
        try:
            os.link(w, dst / w.name)
        except OSError:
            shutil.copyfile(w, dst / w.name)


def docker_build(client: docker.DockerClient, context: Path, tag: str | None, what: str,
                 buildargs: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None) -> str:
    """Build `context` as `tag` with no network; ImageBuildError with the log's tail."""
    import docker.errors

    try:
        image, _logs = client.images.build(
            path=str(context), tag=tag, rm=True, forcerm=True, pull=False,
            network_mode="none", buildargs=buildargs or {}, labels=labels or {},
        )
    except docker.errors.BuildError as e:
        tail = []
        for chunk in e.build_log:
            if "stream" in chunk:
                tail.extend(chunk["stream"].rstrip("\n").splitlines())
            elif "error" in chunk:
                tail.append(chunk["error"])
        raise ImageBuildError(f"{what}: docker build of {tag} failed: {e.msg}\n"
                              + "\n".join(tail[-20:])) from None
    except docker.errors.APIError as e:
        raise ImageBuildError(f"{what}: docker build of {tag} failed: {e}") from None
    return str(image.id)
