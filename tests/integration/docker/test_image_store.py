"""The bounded image store on a real engine: a worker keeps the newest few code images of
each connector, never one a container uses, and rebuilds a pruned version on demand.

Every connector here has a tenant of its own, so the images these tests count, build and
remove are theirs alone. The packages-image bound is raised out of reach: packages images
are shared between connectors (and other tests), so these tests never remove one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from worker import naming
from worker.images import build_connector_image
from worker.sandbox.docker import DockerSandbox
from worker.settings import settings
from worker.spec import Connector, load_connector

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def code(version: int) -> str:
    return f'''
VERSION = {version}
def list_objects(c, m):
    yield {{"name": "a", "fingerprint": "1"}}
def read_bytes(c, m):
    yield "version\\n{version}\\n"
'''


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


def version(folder: Path, tenant: str, name: str, n: int) -> Connector:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connector.yaml").write_text(f"name: {name}\ntenant: {tenant}\n")
    (folder / "connector.py").write_text(code(n))
    return load_connector(folder)


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
