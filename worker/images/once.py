"""Build an image at most once, across threads and processes.

`build_once` is the one place that does "exists? lock; exists? build": the first caller
builds while the others wait on a per-tag file lock (`fcntl.flock`, under the build
cache), then find the image and return without building. Only builders of the same tag
wait for each other. `held` does the same under a lease on the tag (lease.py), so no
prune removes it until the caller lets go. Every build also holds a share of the host's
BUILDS lease: the images a build makes before its tag (build stages, a packages image
under its import check) are untagged, and a prune removes untagged images only while
no build runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from worker.images.cache import lock_dir
from worker.images.errors import ImageBuildError
from worker.images.lease import lease

if TYPE_CHECKING:
    import docker


BUILDS = "builds-in-progress"


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive lock named `name`, held across processes on this host."""
    d = lock_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock")
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_once(client: docker.DockerClient, tag: str, build: Callable[[], object]) -> str:
    """`tag`, after calling `build()` to create it if no image has that tag yet."""
    if image_exists(client, tag):
        return tag
    with file_lock(tag):
        if image_exists(client, tag):
            return tag
        with lease(BUILDS):
            build()
        if not image_exists(client, tag):
            raise ImageBuildError(f"the build of {tag} finished without producing it")
    return tag


@contextlib.contextmanager
def held(client: docker.DockerClient, tag: str, build: Callable[[], object]) -> Iterator[str]:
    """`tag`, built if missing, leased until the block ends: no prune removes it meanwhile."""
    with lease(tag):
        yield build_once(client, tag, build)
