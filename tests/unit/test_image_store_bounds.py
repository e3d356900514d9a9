"""Which tags the image store lets go, judged from labels alone (no engine needed)."""

from __future__ import annotations

from worker.images.store import StoredImage, code_surplus, packages_surplus


def code(name: str, tag: str, created: int, pkgs: str, tenant: str = "t") -> StoredImage:
    return StoredImage(tag=f"connector-{tenant}--{name}:{tag}", created=created,
                       kind="connector", tenant=tenant, name=name, packages=pkgs)


def pkgs(tag: str, created: int) -> StoredImage:
    return StoredImage(tag=f"connector-pkgs:{tag}", created=created, kind="packages")


def test_newest_code_images_stay_and_the_one_about_to_run_is_never_dropped() -> None:
    images = [code("c", f"v{i}", i, "connector-pkgs:p") for i in range(5)]
    assert code_surplus(images, 2) == ["connector-t--c:v2", "connector-t--c:v1",
                                       "connector-t--c:v0"]
    # a rollback to v0: it counts as the newest
    assert "connector-t--c:v0" not in code_surplus(images, 2, protect=["connector-t--c:v0"])


def test_only_the_named_connectors_code_images_are_judged() -> None:
    images = [code("c", f"v{i}", i, "p") for i in range(3)]
    images += [code("d", f"v{i}", i, "p") for i in range(3)]
    assert code_surplus(images, 1, only=("t", "d")) == ["connector-t--d:v1", "connector-t--d:v0"]


def test_packages_images_a_code_image_uses_stay_and_spare_ones_are_bounded() -> None:
    images = [code("c", "v1", 10, "connector-pkgs:used"), pkgs("used", 1), pkgs("old", 2),
              pkgs("mid", 3), pkgs("new", 4)]
    assert packages_surplus(images, 1) == ["connector-pkgs:mid", "connector-pkgs:old"]
    assert packages_surplus(images, 0) == ["connector-pkgs:new", "connector-pkgs:mid",
                                           "connector-pkgs:old"]
