"""The bounded image store on a real engine: a worker keeps the most recently used few
code images of each connector, never one a container uses, and rebuilds a pruned version
on demand; old base images, code tags of the old repository naming and untagged
leftovers go too.

Every connector here has a tenant of its own, so the images these tests count, build and
remove are theirs alone. Packages and base images are shared between connectors (and
other tests): the tests that judge them make their own and prune through a client whose
image listing shows only those (`Own`); elsewhere their bounds stay out of reach.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers.connectors import versioned as version
from worker import naming
from worker.images import build_connector_image
from worker.images.store import prune_images
from worker.sandbox.docker import DockerSandbox
from worker.settings import settings

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture
def tenant(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CONNECTOR_KEEP_CODE_IMAGES", "3")
    monkeypatch.setenv("CONNECTOR_KEEP_PACKAGES_IMAGES", "1000000")
    settings.cache_clear()
    t = "gc" + uuid.uuid4().hex[:10]
    yield t
    monkeypatch.undo()
    settings.cache_clear()
    client = docker.from_env()
    for img in client.images.list(filters={"label": f"{naming.LABEL_TENANT}={t}"}):
        for tag in img.tags:
            client.api.remove_image(tag)


def code_tags(client: docker.DockerClient, tenant: str, name: str) -> set[str]:
    repo = naming.image_repo(tenant, name)
    return {t for img in client.images.list(name=repo) for t in img.tags}


def test_only_the_newest_code_images_stay(tenant: str, tmp_path: Path) -> None:
    client = docker.from_env()
    other = build_connector_image(client, version(tmp_path / "other", tenant, "other", 0))
    tags = [build_connector_image(client, version(tmp_path / "c", tenant, "c", n))
            for n in range(5)]
    assert len(set(tags)) == 5
    assert code_tags(client, tenant, "c") == set(tags[2:])
    # another connector's images are not this connector's to prune
    assert code_tags(client, tenant, "other") == {other}


def test_an_image_a_container_runs_survives(tenant: str, tmp_path: Path) -> None:
    client = docker.from_env()
    first = build_connector_image(client, version(tmp_path / "c", tenant, "c", 0))
    running = client.containers.run(first, ["sleep", "300"], detach=True, network_mode="none",
                                    labels={"io.connector.test": tenant})
    try:
        tags = [build_connector_image(client, version(tmp_path / "c", tenant, "c", n))
                for n in range(1, 5)]
        assert code_tags(client, tenant, "c") == {first, *tags[1:]}
    finally:
        running.remove(force=True)


def test_a_pruned_version_is_rebuilt_when_it_runs_again(tenant: str, tmp_path: Path) -> None:
    box = DockerSandbox()
    old = version(tmp_path / "old", tenant, "c", 0)
    old_tag = box.image_for(old)
    for n in range(1, 5):
        box.image_for(version(tmp_path / f"v{n}", tenant, "c", n))
    assert old_tag not in code_tags(box.client, tenant, "c")
    # a rollback to the old version: the sandbox rebuilds it and the read succeeds
    session = box.open(old, None)
    try:
        [fragment] = list(session.list())
        [batch] = list(session.read(fragment))
        assert batch.column("version").to_pylist() == ["0"]
    finally:
        session.close()
    assert old_tag in code_tags(box.client, tenant, "c")


# --- every kind of the project's images, on a view of the engine holding this test's own ---

TEST_LABEL = "io.connector.test"


class Own:
    """Images this test makes (each FROM the current base, a label or two apart), and an
    engine client whose image listing shows only those: the store's bounds are set low
    here, and the images of other tests and helpers on this engine must not be judged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from worker.images import base_image

        self.uid = "st" + uuid.uuid4().hex[:10]
        self.client = docker.from_env()
        self.base = base_image(self.client)
        self.made: list[str] = []
        real = self.client.api.images
        uid = self.uid

        def images(*args, filters=None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            f = dict(filters or {})
            have = f.get("label", [])
            f["label"] = [*([have] if isinstance(have, str) else have), f"{TEST_LABEL}={uid}"]
            return real(*args, filters=f, **kwargs)

        monkeypatch.setattr(self.client.api, "images", images)

    def image(self, tag: str | None, kind: str, parent: str | None = None,
              **labels: str) -> str:
        """An image of `kind` FROM `parent` (the base by default), tagged `tag` or untagged."""
        import io

        labels = {"io.connector.kind": kind, TEST_LABEL: self.uid,
                  f"{TEST_LABEL}.image": uuid.uuid4().hex, **labels}
        dockerfile = f"FROM {parent or self.base}\nLABEL " + " ".join(
            f'"{k}"="{v}"' for k, v in labels.items()) + "\n"
        image, _ = self.client.images.build(fileobj=io.BytesIO(dockerfile.encode()),
                                            tag=tag, rm=True, network_mode="none")
        self.made.append(tag or str(image.id))
        return tag or str(image.id)

    def present(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def cleanup(self) -> None:
        for ref in reversed(self.made):
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_image(ref)


@pytest.fixture
def own(monkeypatch: pytest.MonkeyPatch) -> Iterator[Own]:
    o = Own(monkeypatch)
    yield o
    o.cleanup()


def bounds(monkeypatch: pytest.MonkeyPatch, **values: int) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"CONNECTOR_{name.upper()}", str(value))
    settings.cache_clear()


def test_old_base_images_go_the_current_and_those_under_kept_images_stay(
        own: Own, monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, keep_base_images=0, keep_packages_images=1000000)
    u = own.uid
    current = own.image(f"connector-base:{u}cur", "base")
    old = own.image(f"connector-base:{u}old", "base")
    under = own.image(f"connector-base:{u}under", "base")
    own.image(f"connector-pkgs:{u}p", "packages", parent=under)
    running = own.image(f"connector-base:{u}run", "base")
    container = own.client.containers.create(running, ["true"], network_mode="none",
                                             labels={TEST_LABEL: u})
    try:
        result = prune_images(own.client, protect=[current])
    finally:
        container.remove()
    assert not own.present(old), result
    assert own.present(current) and own.present(under) and own.present(running)
    assert result.removed == [old] and result.in_use == [running]


def test_images_of_the_old_repository_naming_go(
        own: Own, monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing runs them any more: the connector's bound does not keep them
    bounds(monkeypatch, keep_code_images=3, keep_packages_images=1000000)
    t = "gc" + uuid.uuid4().hex[:10]
    labels = {naming.LABEL_TENANT: t, naming.LABEL_NAME: "c"}
    legacy = own.image(f"connector-{t}-c:{own.uid}", "connector", **labels)
    current = own.image(f"{naming.image_repo(t, 'c')}:{own.uid}", "connector", **labels)
    result = prune_images(own.client, only=(t, "c"))
    assert not own.present(legacy), result
    assert own.present(current)


def test_untagged_images_of_the_project_go_once_old_enough(
        own: Own, monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, prune_untagged_after=0)
    untagged = own.image(None, "base")
    result = prune_images(own.client)
    assert not own.present(untagged), result
    assert untagged in result.removed


def test_spare_packages_images_are_kept_by_last_use_not_by_build_time(
        own: Own, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.images.lease import lease

    bounds(monkeypatch, keep_packages_images=1, keep_base_images=1000000)
    used = own.image(f"connector-pkgs:{own.uid}used", "packages")
    newer = own.image(f"connector-pkgs:{own.uid}newer", "packages")
    # a connector whose environment is `used` runs again: the sandbox leases its image
    with lease(used):
        pass
    prune_images(own.client)
    assert own.present(used)
    assert not own.present(newer)
