"""`connector-base:<hash>`: the OS image + /opt/venv (the runtime's wheels) + the sandbox
runtime's sources under /opt/runtime/worker.

The tag covers the OS image source, `files/base.Dockerfile`, the runtime's pins, the
target interpreter and platform, and the runtime's sources (`runtime.py` says which).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from worker.images.cache import wheel_cache_dir
from worker.images.context import FILES_DIR, build_context, copy_files, docker_build, link_wheels
from worker.images.errors import ImageBuildError
from worker.images.once import held, image_exists
from worker.images.pip import ABI, PLATFORMS, PY_VERSION, PipFailure, wheels_for
from worker.images.rootfs import os_image, os_tag
from worker.images.runtime import runtime_files
from worker.images.tags import LABEL_KIND, digest, tree_parts
from worker.settings import settings

if TYPE_CHECKING:
    import docker

REGISTRY_OS_IMAGE = "python:3.11-slim"


def base_pins() -> list[str]:
    lines = (FILES_DIR / "base-requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def base_tag(os_source: str) -> str:
    """The base tag for an OS image source: covers Dockerfile, pins and runtime sources."""
    parts: list[str | bytes] = ["base", os_source, (FILES_DIR / "base.Dockerfile").read_bytes(),
                                "\n".join(base_pins()), PY_VERSION, *PLATFORMS, ABI]
    parts.extend(tree_parts(runtime_files()))
    return f"connector-base:{digest(parts)}"


def current_base_tag(registry: bool | None = None) -> str:
    """The base tag this worker's settings and sources give (what `base_image` builds)."""
    if registry is None:
        registry = settings().base_from_registry
    return base_tag(REGISTRY_OS_IMAGE if registry else os_tag())


def base_image(client: docker.DockerClient, *, registry: bool | None = None,
               wheel_cache: Path | None = None) -> str:
    """Ensure the base image exists (build it if missing) and return its tag.

    registry=True starts FROM python:3.11-slim (needs a reachable registry); the default
    (unless the base_from_registry setting says otherwise) builds the OS layer with
    debootstrap.
    """
    with leased_base(client, registry=registry, wheel_cache=wheel_cache) as tag:
        return tag


@contextlib.contextmanager
def leased_base(client: docker.DockerClient, *, registry: bool | None = None,
                wheel_cache: Path | None = None) -> Iterator[str]:
    """`base_image`, leased (worker/images/lease.py) until the block ends."""
    if registry is None:
        registry = settings().base_from_registry
    tag = current_base_tag(registry)

    def build() -> None:
        source = REGISTRY_OS_IMAGE if registry else os_image(client)
        if registry and not image_exists(client, source):
            client.images.pull(source)
        pins = base_pins()
        try:
            wheels = wheels_for(pins, wheel_cache or wheel_cache_dir())
        except PipFailure as e:
            raise ImageBuildError(f"base image: runtime packages {pins} could not be "
                                  f"resolved: {e.reason}") from None
        with build_context("base", "base.Dockerfile") as ctx:
            (ctx / "requirements.txt").write_text("\n".join(pins) + "\n")
            link_wheels([w.path for w in wheels], ctx / "wheels")
            copy_files(runtime_files(), ctx / "runtime" / "worker")
            docker_build(client, ctx, tag, "base image", buildargs={"OS_IMAGE": source},
                         labels={LABEL_KIND: "base"})

    with held(client, tag, build) as t:
        yield t
