"""The files of a connector folder, as image builds and deploy bundles both take them.

One walk for both, so a folder deploys exactly as it builds. It yields regular files only,
in a stable order (each directory's files sorted, then its subdirectories sorted), without
caches, VCS data, virtualenvs and bytecode, and without datasets this project wrote (a
directory holding `_delta_log`): `connector refresh .` run inside the folder writes its
default output, `./data`, there, and a table, its state and rejects are not the
connector's files (each refresh would change the image and grow the deploy bundle).

Links are refused, whatever they point at, never followed: a link is how a folder's author
would copy a host file (`/etc/hostname`, another tenant's folder, the worker's keys) into an
image or a bundle, and refusing every link means the walker never has to decide whether a
chain of links stays inside. Devices, FIFOs and sockets are refused too (reading a FIFO
would hang the build). Each refusal names the entry and what it is. `FolderFile.read_bytes`
opens without following a link, so a file swapped for one after the walk is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from worker.errors import ConfigError

SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", ".pytest_cache", ".ruff_cache",
                       "node_modules"})
SKIP_SUFFIXES = (".pyc", ".pyo")


class FolderError(ConfigError):
    """A connector folder holds something that cannot be packed; the message names it."""


class FolderFile(BaseModel):
    """One regular file of a folder: `name` is its path inside, '/'-separated."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    size: int
    executable: bool

    def read_bytes(self) -> bytes:
        """The file's bytes, refused if it became a link or special file after the walk."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            why = "became a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise FolderError(f"{self.path}: cannot be read: {why}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise FolderError(f"{self.path}: not a regular file")
            return f.read()


def _refusal(root: Path, p: Path, mode: int) -> FolderError:
    rel = p.relative_to(root).as_posix()
    if stat.S_ISLNK(mode):
        return FolderError(f"{root}: {rel}: symbolic link to {os.readlink(p)}: a connector "
                           "folder holds regular files only (links are never followed; "
                           "copy the file into the folder instead)")
    return FolderError(f"{root}: {rel}: not a regular file (a connector folder holds regular "
                       "files only)")


def _not_text(root: Path, p: Path) -> FolderError | None:
    """A refusal when `p`'s name is not UTF-8 (Linux allows any bytes; image tags, tar
    headers and Docker's build context need text), else None."""
    try:
        p.name.encode("utf-8")
    except UnicodeEncodeError:
        shown = p.relative_to(root).as_posix().encode("utf-8", "backslashreplace").decode()
        return FolderError(f"{root}: {shown}: the name is not UTF-8 text; rename it")
    return None


def _is_dataset(d: Path) -> bool:
    """A Delta table (a dataset a refresh wrote), not part of the connector."""
    return (d / "_delta_log").is_dir() and not (d / "_delta_log").is_symlink()


def _raise(e: OSError) -> None:
    raise FolderError(f"{e.filename}: cannot be read: {e.strerror}") from None


def walk_folder(root: Path, exclude: Iterable[Path] = (), *, max_files: int | None = None,
                max_bytes: int | None = None) -> list[FolderFile]:
    """The regular files under `root` minus `exclude` (compared after resolving, so an
    excluded file may itself be a link: it is skipped, never read). Raises FolderError on
    a link or special file, or past `max_files` files or `max_bytes` bytes in total."""
    root = Path(root)
    skip = {Path(p).resolve() for p in exclude}
    out: list[FolderFile] = []
    total = 0
    for d, dirs, names in os.walk(root, onerror=_raise):
        here = Path(d)
        for n in dirs:
            if os.path.islink(here / n) and n not in SKIP_DIRS:
                raise _refusal(root, here / n, os.lstat(here / n).st_mode)
            if n not in SKIP_DIRS and (refused := _not_text(root, here / n)) is not None:
                raise refused
        dirs[:] = sorted(n for n in dirs
                         if n not in SKIP_DIRS and not _is_dataset(here / n))
        for n in sorted(names):
            p = here / n
            if n.endswith(SKIP_SUFFIXES) or (skip and p.resolve() in skip):
                continue
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                raise _refusal(root, p, st.st_mode)
            if (refused := _not_text(root, p)) is not None:
                raise refused
            total += st.st_size
            if max_files is not None and len(out) >= max_files:
                raise FolderError(f"{root}: more than {max_files} files (the limit)")
            if max_bytes is not None and total > max_bytes:
                raise FolderError(f"{root}: its files add up to at least {total} bytes, over "
                                  f"the {max_bytes} byte limit")
            out.append(FolderFile(name=p.relative_to(root).as_posix(), path=p,
                                  size=st.st_size, executable=bool(st.st_mode & 0o111)))
    return out
