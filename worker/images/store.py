"""The bounded image store of one worker host: which of the project's images stay.

Per connector repository the newest `keep_code_images` code images stay (the image just
built or about to run always among them); packages images stay while a remaining code
image names one (its `io.connector.packages-image` label), and of the others only the
`keep_packages_images` newest. Base and OS images are never removed.

Only images carrying the project's labels (`io.connector.kind`, and for code images the
tenant and connector labels under the repository they name) are considered, and only
their project tags are removed, never by id and never forced: an image a container
(running or stopped) uses is refused by the engine, which counts as "in use", not as a
failure. A removed tag that is needed again is rebuilt by `build_once`, since every tag
is a hash of its inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from worker import naming
from worker.images.base import LABEL_KIND
from worker.settings import settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

PACKAGES_REPO = "connector-pkgs"
LABEL_PACKAGES = "io.connector.packages-image"


class StoredImage(BaseModel):
    """One project tag on the engine and what its labels say about it."""

    tag: str
    created: int
    kind: str
    tenant: str = ""
    name: str = ""
    packages: str = ""


class PruneResult(BaseModel):
    removed: list[str] = []
    in_use: list[str] = []


def stored_images(client: docker.DockerClient) -> list[StoredImage]:
    """Every tag of a code or packages image the project built: code tags only under the
    repository their tenant and connector labels name, packages tags under connector-pkgs."""
    out: list[StoredImage] = []
    for img in client.api.images(filters={"label": LABEL_KIND}):
        labels = img.get("Labels") or {}
        kind = labels.get(LABEL_KIND, "")
        tenant, name = labels.get(naming.LABEL_TENANT, ""), labels.get(naming.LABEL_NAME, "")
        for tag in img.get("RepoTags") or []:
            repo = tag.rpartition(":")[0]
            if kind == "connector":
                try:
                    ours = repo == naming.image_repo(tenant, name)
                except naming.InvalidName:
                    ours = False
            else:
                ours = kind == "packages" and repo == PACKAGES_REPO
            if ours:
                out.append(StoredImage(tag=tag, created=int(img.get("Created") or 0), kind=kind,
                                       tenant=tenant, name=name,
                                       packages=labels.get(LABEL_PACKAGES, "")))
    return out


def _newest_first(images: Iterable[StoredImage], protect: set[str]) -> list[StoredImage]:
    return sorted(images, key=lambda i: (i.tag in protect, i.created, i.tag), reverse=True)


def code_surplus(images: list[StoredImage], keep: int, protect: Iterable[str] = (),
                 only: tuple[str, str] | None = None) -> list[str]:
    """Code tags past `keep` per connector repository (`only`: just that connector's)."""
    protected = set(protect)
    repos: dict[tuple[str, str], list[StoredImage]] = {}
    for i in images:
        if i.kind == "connector" and (only is None or (i.tenant, i.name) == only):
            repos.setdefault((i.tenant, i.name), []).append(i)
    return [i.tag for versions in repos.values()
            for i in _newest_first(versions, protected)[keep:]]


def packages_surplus(images: list[StoredImage], keep: int,
                     protect: Iterable[str] = ()) -> list[str]:
    """Packages tags no code image names, past the `keep` newest. Packages images are
    shared between connectors, so every code image on the engine counts."""
    protected = set(protect)
    used = {i.packages for i in images if i.kind == "connector"} | protected
    spare = [i for i in images if i.kind == "packages" and i.tag not in used]
    return [i.tag for i in _newest_first(spare, protected)[keep:]]


def prune_images(client: docker.DockerClient, protect: Iterable[str] = (),
                 only: tuple[str, str] | None = None) -> PruneResult:
    """Remove the project's tags past the store's bounds: code images of `only` (or of
    every connector), then packages images no remaining code image names."""
    import docker.errors
    import requests.exceptions

    s = settings()
    result = PruneResult()
    try:
        # Code first, then packages against the code images that are left: one a
        # container still holds keeps its packages image too.
        _remove(client, code_surplus(stored_images(client), s.keep_code_images, protect,
                                     only), result)
        _remove(client, packages_surplus(stored_images(client), s.keep_packages_images,
                                         protect), result)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        # a store left over its bound until the next build is no reason to fail this one
        log.warning("image store: pruning stopped: %s", e)
    return result


def _remove(client: docker.DockerClient, tags: list[str], result: PruneResult) -> None:
    import docker.errors

    for tag in tags:
        try:
            client.api.remove_image(tag)
        except docker.errors.ImageNotFound:
            continue  # another worker on this host removed it first
        except docker.errors.APIError as e:
            if e.status_code == 409:  # a container uses it: the engine refuses, rightly
                result.in_use.append(tag)
            else:
                log.warning("image %s could not be removed: %s", tag, e)
            continue
        result.removed.append(tag)
