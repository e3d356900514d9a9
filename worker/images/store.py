"""The bounded image store of one worker host: which of the project's images stay.

Every rank below is by last use: the later of an image's creation and its last lease
(worker/images/lease.py: a session about to start, a build on it).

- Code images: per connector the `keep_code_images` most recently used stay (the image
  just built or about to run always among them). Tags in the repository naming from
  before worker/naming.py (`connector-<tenant>-<name>`) all go: nothing runs them any
  more.
- Packages images stay while a remaining code image names one (its
  `io.connector.packages-image` label), and of the others the `keep_packages_images`
  most recently used, where a code image's use counts as a use of its packages image.
- Base images (`connector-base`) stay when current (the caller protects it) or under a
  remaining packages or code image (found through the images' parents), and of the
  others the `keep_base_images` most recently used. OS images stay.
- Untagged images of the project (build stages, a packages image whose import check
  failed in a worker that died) go once `prune_untagged_after` seconds old, and only
  while no build on this host runs (once.BUILDS): an image a build just made has no tag
  yet.

Only images carrying the project's label (`io.connector.kind`, and for code images the
tenant and connector labels under the repository they name) are considered; only their
project tags are removed (an untagged image by id), never forced: an image a container
(running or stopped) uses, or one with child images, is refused by the engine, which
counts as "in use", not as a failure, and so is a tag someone holds a lease on. A
removed tag that is needed again is rebuilt by `build_once`, since every tag is a hash
of its inputs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from worker import naming
from worker.images import lease
from worker.images.once import BUILDS
from worker.images.tags import LABEL_KIND
from worker.settings import settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

PACKAGES_REPO = "connector-pkgs"
BASE_REPO = "connector-base"
LABEL_PACKAGES = "io.connector.packages-image"


class StoredImage(BaseModel):
    """One project tag (or one untagged project image) and what its labels say."""

    tag: str  # "" for an untagged image
    id: str = ""
    created: int
    used: float = 0.0  # the tag's last lease, 0 if never
    kind: str
    tenant: str = ""
    name: str = ""
    packages: str = ""
    legacy: bool = False  # a code tag in the repository naming before worker/naming.py
    base_id: str = ""  # the nearest base image under this one (packages and code)

    @property
    def last_use(self) -> float:
        return max(float(self.created), self.used)


class PruneResult(BaseModel):
    removed: list[str] = []
    in_use: list[str] = []


def project_images(client: docker.DockerClient) -> list[dict[str, Any]]:
    """The engine's images with the project's label, intermediate ones included (their
    parents link a packages image to its base)."""
    return list(client.api.images(all=True, filters={"label": LABEL_KIND}))


def _tags(img: dict[str, Any]) -> list[str]:
    return [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"]


def _code_repo(tenant: str, name: str) -> tuple[str, str]:
    """The repository a code image of (tenant, name) is under now, and the old one."""
    try:
        current = naming.image_repo(tenant, name)
    except naming.InvalidName:
        current = ""
    return current, f"connector-{tenant}-{name}" if tenant and name else ""


def stored_images(client: docker.DockerClient) -> list[StoredImage]:
    """Every project tag the store judges, and every untagged project image no other
    image is built on: code tags under the repository their tenant and connector labels
    name (or the old naming of it), packages tags under connector-pkgs, base tags under
    connector-base."""
    raw = project_images(client)
    parents = {img["Id"]: img.get("ParentId") or "" for img in raw}
    has_children = set(parents.values())
    bases = {img["Id"] for img in raw
             if (img.get("Labels") or {}).get(LABEL_KIND) == "base"
             and any(t.rpartition(":")[0] == BASE_REPO for t in _tags(img))}

    def base_under(image_id: str) -> str:
        seen: set[str] = set()
        p = parents.get(image_id, "")
        while p and p not in bases and p not in seen:
            seen.add(p)
            p = parents.get(p, "")
        return p if p in bases else ""

    out: list[StoredImage] = []
    for img in raw:
        labels = img.get("Labels") or {}
        kind = labels.get(LABEL_KIND, "")
        tenant, name = labels.get(naming.LABEL_TENANT, ""), labels.get(naming.LABEL_NAME, "")
        fields = {"id": img["Id"], "created": int(img.get("Created") or 0), "kind": kind,
                  "tenant": tenant, "name": name, "packages": labels.get(LABEL_PACKAGES, "")}
        tags = _tags(img)
        if not tags:
            if img["Id"] not in has_children:
                out.append(StoredImage(tag="", **fields))
            continue
        for tag in tags:
            repo = tag.rpartition(":")[0]
            legacy = False
            if kind == "connector":
                current, old = _code_repo(tenant, name)
                legacy = repo == old
                ours = repo == current or legacy
            else:
                ours = ((kind == "packages" and repo == PACKAGES_REPO)
                        or (kind == "base" and repo == BASE_REPO))
            if ours:
                out.append(StoredImage(
                    tag=tag, used=lease.last_used(tag), legacy=legacy,
                    base_id=base_under(img["Id"]) if kind != "base" else "", **fields))
    return out


def _most_recent_first(images: Iterable[StoredImage], protect: set[str]) -> list[StoredImage]:
    return sorted(images, key=lambda i: (i.tag in protect, i.last_use, i.tag), reverse=True)


def code_surplus(images: list[StoredImage], keep: int, protect: Iterable[str] = (),
                 only: tuple[str, str] | None = None) -> list[str]:
    """Code tags past `keep` per connector (`only`: just that connector's), the least
    recently used first, and every tag of the old naming."""
    protected = set(protect)
    repos: dict[tuple[str, str], list[StoredImage]] = {}
    for i in images:
        if i.kind == "connector" and i.tag and (only is None or (i.tenant, i.name) == only):
            repos.setdefault((i.tenant, i.name), []).append(i)
    surplus = [i.tag for versions in repos.values()
               for i in _most_recent_first([v for v in versions if not v.legacy],
                                           protected)[keep:]]
    # nothing runs a tag of the old naming any more: past every bound
    return surplus + [i.tag for versions in repos.values() for i in versions
                      if i.legacy and i.tag not in protected]


def packages_surplus(images: list[StoredImage], keep: int,
                     protect: Iterable[str] = ()) -> list[str]:
    """Packages tags no code image names, past the `keep` most recently used. Packages
    images are shared between connectors, so every code image on the engine counts."""
    protected = set(protect)
    used = {i.packages for i in images if i.kind == "connector" and i.tag} | protected
    spare = [i for i in images if i.kind == "packages" and i.tag and i.tag not in used]
    return [i.tag for i in _most_recent_first(spare, protected)[keep:]]


def base_surplus(images: list[StoredImage], keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Base tags neither protected (the current base) nor under a remaining packages or
    code image, past the `keep` most recently used."""
    protected = set(protect)
    under = {i.base_id for i in images if i.kind in ("packages", "connector") and i.tag}
    kept_ids = under | {i.id for i in images if i.kind == "base" and i.tag in protected}
    spare = [i for i in images if i.kind == "base" and i.tag and i.id not in kept_ids]
    return [i.tag for i in _most_recent_first(spare, protected)[keep:]]


def untagged_surplus(images: list[StoredImage], age: float, now: float) -> list[str]:
    """Ids of untagged project images created more than `age` seconds before `now`."""
    return [i.id for i in images if not i.tag and i.created <= now - age]


def prune_images(client: docker.DockerClient, protect: Iterable[str] = (),
                 only: tuple[str, str] | None = None) -> PruneResult:
    """Remove the project's images past the store's bounds: code images of `only` (or of
    every connector), then packages images no remaining code image names, then base
    images nothing remaining is built on, then old untagged images."""
    import docker.errors
    import requests.exceptions

    s = settings()
    protected = list(protect)
    result = PruneResult()
    try:
        images = stored_images(client)
        # Code first, then packages against the code images that are left (one a
        # container still holds keeps its packages image too), then bases likewise.
        gone = _remove(client, code_surplus(images, s.keep_code_images, protected, only),
                       result)
        _carry_use(images, gone)
        images = [i for i in images if i.tag not in gone]
        gone = _remove(client, packages_surplus(images, s.keep_packages_images, protected),
                       result)
        images = [i for i in images if i.tag not in gone]
        _remove(client, base_surplus(images, s.keep_base_images, protected), result)
        _remove(client, untagged_surplus(images, s.prune_untagged_after, time.time()),
                result, guard=lambda ref: _still_untagged(client, ref))
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        # a store left over its bound until the next build is no reason to fail this one
        log.warning("image store: pruning stopped: %s", e)
    return result


def _carry_use(images: list[StoredImage], gone: set[str]) -> None:
    """A removed code image's last use becomes a use of its packages image: that is
    when the environment last ran."""
    for i in images:
        if i.tag in gone and i.packages:
            lease.record_use(i.packages, i.last_use)
            for p in images:
                if p.tag == i.packages:
                    p.used = max(p.used, i.last_use)


@contextlib.contextmanager
def _still_untagged(client: docker.DockerClient, image_id: str) -> Iterator[bool]:
    """True while no build runs on this host and `image_id` has no tag: a build may have
    tagged it since the listing (the build cache hands back an identical image), and a
    removal by id would take the tag with it."""
    import docker.errors

    with lease.claim(BUILDS) as free:
        if free:
            try:
                free = not _tags(client.api.inspect_image(image_id))
            except docker.errors.ImageNotFound:
                free = False  # gone already
        yield free


def _remove(client: docker.DockerClient, refs: list[str], result: PruneResult,
            guard: Callable[[str], Any] = lease.claim) -> set[str]:
    """Remove each ref the guard lets go (a tag's lease by default); the removed ones."""
    import docker.errors

    removed: set[str] = set()
    for ref in refs:
        with guard(ref) as free:
            if not free:
                result.in_use.append(ref)
                continue
            try:
                client.api.remove_image(ref)
            except docker.errors.ImageNotFound:
                continue  # another worker on this host removed it first
            except docker.errors.APIError as e:
                if e.status_code == 409:  # a container uses it: the engine refuses, rightly
                    result.in_use.append(ref)
                else:
                    log.warning("image %s could not be removed: %s", ref, e)
                continue
        result.removed.append(ref)
        removed.add(ref)
    return removed
