"""A connector's image: `connector-pkgs:<h>` (the base plus the user environment,
/opt/user: the default packages, then the connector's pins over them) and over that the
code layer, `<repository>:<h>` (repository `connector-<tenant>--<name>`, from
worker/naming.py; the connector folder at /opt/connector, root-owned and read-only to
the sandbox user).

The packages tag covers the base image id, the default packages, its Dockerfile, the
sorted pins and connector.lock, so a code change reuses it (and connectors without pins
share one); the code tag covers the base id, the pins and every file of the folder. The
folder is read with `worker.folder.walk_folder`: a link or a special file refuses the
build. The credentials file is never copied: secrets reach the sandbox over the protocol at
session start.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker import naming
from worker.folder import FolderError, FolderFile, walk_folder
from worker.images.base import LABEL_KIND, leased_base
from worker.images.cache import wheel_cache_dir
from worker.images.checkrun import check_imports
from worker.images.context import (
    FILES_DIR,
    build_context,
    copy_files,
    docker_build,
    link_wheels,
)
from worker.images.errors import ImageBuildError
from worker.images.once import held
from worker.images.pip import PipFailure
from worker.images.remembered import folder_digest
from worker.images.store import LABEL_PACKAGES, prune_images
from worker.images.tags import digest, normalize_pins
from worker.spec import Connector

if TYPE_CHECKING:
    import docker


def image_repo(connector: Connector) -> str:
    return naming.image_repo(connector.spec.tenant, connector.spec.name)


def connector_files(connector: Connector) -> list[FolderFile]:
    """The folder as it goes into the code layer, minus the credentials file."""
    creds = connector.spec.credentials
    exclude = [connector.path / creds.file] if creds and creds.file else []
    try:
        return walk_folder(connector.path, exclude)
    except FolderError as e:
        raise ImageBuildError(f"connector {connector.spec.name!r}: {e}") from None


def packages_tag(base_id: str, pins: Sequence[str], lock: str = "") -> str:
    from worker.userenv.wheels import DEFAULTS_FILE

    return "connector-pkgs:" + digest(["pkgs", base_id, DEFAULTS_FILE.read_text(),
                                       (FILES_DIR / "packages.Dockerfile").read_text(),
                                       *normalize_pins(pins), "--lock--", lock])


def connector_tag(base_id: str, connector: Connector,
                  files: Sequence[FolderFile] | None = None) -> str:
    """hash(packages tag, code): the code covers connector.code_hash and every other
    file of the folder (helper modules, data files), since all are copied. The packages
    tag (base id, defaults, its Dockerfile, pins, lock) is an input, so a change to the
    default packages or to how environments are built reaches every code image. The
    folder's bytes are hashed again only when its files' stat signatures moved
    (remembered.py): finding the image of an unchanged folder reads none of them."""
    from worker.userenv.wheels import lock_text

    pkgs = packages_tag(base_id, normalize_pins(connector.spec.packages), lock_text(connector))
    head: list[str | bytes] = ["connector", base_id, pkgs, "--code--", connector.code_hash]
    files = connector_files(connector) if files is None else files
    return f"{image_repo(connector)}:{folder_digest(connector.path, head, files)}"


def _resolve_error(connector: Connector, pins: Sequence[str], e: PipFailure) -> ImageBuildError:
    def mentioned(pin: str) -> bool:
        name = re.split(r"[\[<>=!~\s]", pin, maxsplit=1)[0]
        pattern = re.sub(r"[-_.]+", "[-_.]", re.escape(name).replace(r"\-", "-"))
        return re.search(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", e.reason, re.I) is not None

    named = [p for p in pins if mentioned(p)] or list(pins)
    what = (f"package {named[0]!r}" if len(named) == 1
            else "packages " + ", ".join(repr(p) for p in named))
    return ImageBuildError(f"connector {connector.spec.name!r}: {what} could not be resolved: "
                           f"{e.reason}")


@contextlib.contextmanager
def packages_image(client: docker.DockerClient, connector: Connector, base: str,
                   wheel_cache: Path) -> Iterator[str]:
    """`connector-pkgs:<hash>`: the base plus the user environment (/opt/user), leased
    until the block ends. Every connector has one, pins or not: the defaults live there,
    not in the base."""
    from worker.userenv.wheels import lock_text, user_wheels

    base_img = client.images.get(base)
    pins = normalize_pins(connector.spec.packages)
    tag = packages_tag(str(base_img.id), pins, lock_text(connector))

    def build() -> None:
        wheels = user_wheels(connector, wheel_cache)
        with build_context("pkgs", "packages.Dockerfile") as ctx:
            link_wheels(wheels.defaults, ctx / "defaults")
            link_wheels(wheels.pins, ctx / "pins")
            # Untagged until the import check passes: a tag is only ever a checked image.
            image_id = docker_build(client, ctx, None,
                                    f"connector {connector.spec.name!r}: packages",
                                    buildargs={"BASE": base},
                                    labels={LABEL_KIND: "packages",
                                            "io.connector.pins": json.dumps(pins)})
        try:
            check_imports(client, image_id, pins, connector)
        except BaseException:
            # Only an image no tag names: the build cache can hand back the very image
            # another (checked) tag already names, which must stay.
            with contextlib.suppress(Exception):
                if not client.api.inspect_image(image_id).get("RepoTags"):
                    client.api.remove_image(image_id)
            raise
        repository, _, name = tag.partition(":")
        client.api.tag(image_id, repository, name)

    with held(client, tag, build) as t:
        yield t


def build_connector_image(client: docker.DockerClient, connector: Connector,
                          wheel_cache: Path | None = None) -> str:
    """Build (or find) the connector's image and return its tag.

    Layers: base -> packages (its own tag, reused across code changes) -> code. Same
    inputs give the same tag and no rebuild. A pin that cannot be resolved, or a link in
    the folder, raises ImageBuildError naming it; existing images are left as they are.
    """
    with leased_connector_image(client, connector, wheel_cache) as tag:
        return tag


@contextlib.contextmanager
def leased_connector_image(client: docker.DockerClient, connector: Connector,
                           wheel_cache: Path | None = None) -> Iterator[str]:
    """`build_connector_image`, its tag leased (worker/images/lease.py) until the block
    ends: a caller creates its container inside the block, and no prune removes the
    image between the two. Each layer is leased while the next is built on it."""
    files = connector_files(connector)
    wheel_cache = wheel_cache or wheel_cache_dir()
    with contextlib.ExitStack() as leases:
        base = leases.enter_context(leased_base(client, wheel_cache=wheel_cache))
        tag = connector_tag(str(client.images.get(base).id), connector, files)
        built = False

        def build() -> None:
            nonlocal built
            built = True
            with packages_image(client, connector, base, wheel_cache) as pkgs, \
                    build_context("code", "code.Dockerfile") as ctx:
                copy_files(files, ctx / "connector")
                docker_build(client, ctx, tag, f"connector {connector.spec.name!r}: code",
                             buildargs={"PKGS": pkgs},
                             labels={LABEL_KIND: "connector",
                                     **naming.labels(connector.spec.tenant,
                                                     connector.spec.name),
                                     LABEL_PACKAGES: pkgs})

        leases.enter_context(held(client, tag, build))
        if built:
            # The store stays bounded: older code images of this connector (never `tag`,
            # never one a container uses or someone leases) and other images past their
            # bounds go. Only after a build, which is what adds images: listing the
            # engine's images costs ~0.5 s on a host holding a thousand, which every
            # `connector test` paid.
            prune_images(client, protect=[tag, base],
                         only=(connector.spec.tenant, connector.spec.name))
        yield tag
