"""One image store, many tenants at once: a tenant's slow build holds up only the builders
of that same image, and a prune never takes an image from under a session about to start.

Each test has tenants of its own (a unique name), so the images it builds and removes are
its own; the store's bounds are set only for the connector a test prunes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers.connectors import versioned as version
from worker import naming
from worker.images.store import prune_images
from worker.sandbox.docker import DockerSandbox
from worker.settings import settings

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

# How long a test waits for something that, once the hole is closed, happens at once; past
# it the test fails (the hole is open) instead of hanging. Not a speed assertion.
PATIENCE = 120


@pytest.fixture
def tenants() -> Iterator[list[str]]:
    made = ["sh" + uuid.uuid4().hex[:10] for _ in range(2)]
    yield made
    client = docker.from_env()
    for t in made:
        for img in client.images.list(filters={"label": f"{naming.LABEL_TENANT}={t}"}):
            for tag in img.tags:
                client.api.remove_image(tag)


def test_a_slow_build_does_not_hold_up_another_tenants_built_image(
        tenants: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.images.connector as images

    slow_tenant, other_tenant = tenants
    box = DockerSandbox()
    ready = version(tmp_path / "b", other_tenant, "c", 1)
    ready_tag = box.image_for(ready)  # built before the slow build starts

    # The slow tenant's build step waits on a gate: a pin whose download takes minutes.
    started, gate = threading.Event(), threading.Event()
    real = images.docker_build

    def slowed(client, context, tag, what, **kwargs):  # noqa: ANN001, ANN202 - a pass-through
        if tag is not None and tag.startswith(naming.image_repo(slow_tenant, "c") + ":"):
            started.set()
            gate.wait(PATIENCE * 2)
        return real(client, context, tag, what, **kwargs)

    monkeypatch.setattr(images, "docker_build", slowed)
    slow_result: list[object] = []
    slow = threading.Thread(target=lambda: slow_result.append(
        box.image_for(version(tmp_path / "a", slow_tenant, "c", 1))), daemon=True)
    slow.start()
    try:
        assert started.wait(PATIENCE), "the slow tenant's build never started"
        got: list[str] = []
        other = threading.Thread(target=lambda: got.append(box.image_for(ready)), daemon=True)
        other.start()
        other.join(PATIENCE)
        # Returned while the slow build is still inside its build step.
        assert got == [ready_tag], "the built image waited for another tenant's build"
        assert not gate.is_set() and slow.is_alive()
    finally:
        gate.set()
        slow.join(PATIENCE * 2)
    assert len(slow_result) == 1 and str(slow_result[0]).startswith(
        naming.image_repo(slow_tenant, "c") + ":")


def test_a_prune_between_image_for_and_the_container_create_spares_the_image(
        tenants: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.sandbox.docker as sandbox_docker

    tenant = tenants[0]
    monkeypatch.setenv("CONNECTOR_KEEP_CODE_IMAGES", "1")
    settings.cache_clear()
    box = DockerSandbox()
    old = version(tmp_path / "v0", tenant, "c", 0)
    old_tag = box.image_for(old)
    # A newer version, built by another worker with a store bound of 1: the old version
    # is past the bound, but a session of it is about to start (a rollback, a retry).
    monkeypatch.setenv("CONNECTOR_KEEP_CODE_IMAGES", "1000000")
    settings.cache_clear()
    new_tag = box.image_for(version(tmp_path / "v1", tenant, "c", 1))
    assert new_tag != old_tag

    # The session's open stops between image_for and the container create (the allowlist
    # check is the first thing the channel does), while another worker prunes.
    at_create, go = threading.Event(), threading.Event()
    real = sandbox_docker.allow_network

    def paused(client, network):  # noqa: ANN001, ANN202 - a pass-through
        at_create.set()
        go.wait(PATIENCE * 2)
        return real(client, network)

    monkeypatch.setattr(sandbox_docker, "allow_network", paused)
    opened: list[object] = []

    def run() -> None:
        try:
            opened.append(box.open(old, None))
        except Exception as e:  # noqa: BLE001 - the failure is what the test reports
            opened.append(e)

    session_thread = threading.Thread(target=run, daemon=True)
    session_thread.start()
    try:
        assert at_create.wait(PATIENCE)
        monkeypatch.setenv("CONNECTOR_KEEP_CODE_IMAGES", "1")
        settings.cache_clear()
        pruned = prune_images(docker.from_env(), protect=[new_tag], only=(tenant, "c"))
        assert old_tag not in pruned.removed
    finally:
        go.set()
        session_thread.join(PATIENCE * 2)
        monkeypatch.setenv("CONNECTOR_KEEP_CODE_IMAGES", "1000000")
        settings.cache_clear()
    [session] = opened
    assert not isinstance(session, Exception), session
    try:
        [fragment] = list(session.list())  # type: ignore[attr-defined]
        [batch] = list(session.read(fragment))  # type: ignore[attr-defined]
        assert batch.column("version").to_pylist() == ["0"]
    finally:
        session.close()  # type: ignore[attr-defined]
