"""Which tags the image store lets go, judged from labels alone (no engine needed)."""

from __future__ import annotations

from worker.images.store import (
    StoredImage,
    base_surplus,
    code_surplus,
    packages_surplus,
    untagged_surplus,
)


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


def test_code_images_are_ranked_by_last_use_and_old_naming_always_goes() -> None:
    images = [code("c", "v0", 0, "p"), code("c", "v1", 1, "p"), code("c", "v2", 2, "p")]
    images[0].used = 100.0  # v0 ran again (a rollback): it is the most recently used
    legacy = StoredImage(tag="connector-t-c:v9", created=99, kind="connector", tenant="t",
                         name="c", packages="p", legacy=True)
    assert code_surplus([*images, legacy], 2) == ["connector-t--c:v1", "connector-t-c:v9"]
    assert code_surplus([*images, legacy], 5) == ["connector-t-c:v9"]


def test_spare_packages_images_go_least_recently_used_first() -> None:
    images = [pkgs("old_but_used", 1), pkgs("new_unused", 5)]
    images[0].used = 50.0
    assert packages_surplus(images, 1) == ["connector-pkgs:new_unused"]


def base(tag: str, created: int, image_id: str) -> StoredImage:
    return StoredImage(tag=f"connector-base:{tag}", id=image_id, created=created, kind="base")


def test_base_images_stay_when_current_or_under_an_image_and_the_rest_are_bounded() -> None:
    under = pkgs("p", 10)
    under.base_id = "id-under"
    images = [base("current", 1, "id-current"), base("under", 2, "id-under"),
              base("spare_old", 3, "id-old"), base("spare_new", 4, "id-new"), under]
    protect = ["connector-base:current"]
    assert base_surplus(images, 0, protect) == ["connector-base:spare_new",
                                                 "connector-base:spare_old"]
    assert base_surplus(images, 1, protect) == ["connector-base:spare_old"]


def test_untagged_images_go_once_old_enough() -> None:
    images = [StoredImage(tag="", id="old", created=100, kind="base"),
              StoredImage(tag="", id="new", created=990, kind="packages"),
              pkgs("tagged", 0)]
    assert untagged_surplus(images, age=60, now=1000) == ["old"]
