"""The shared wheel cache is no candidate for any tenant's resolution.

Every build on a host shares one wheel cache. A wheel in it (left by another tenant's
build: a release since yanked, or a file that is not what the index serves under that
name) must never be offered to another tenant's resolution: a tenant's environment gets
exactly the files its own resolution chose from the index, checked by their hashes.
The forged wheels are made here; the real ones come from the index every build uses.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from tests.helpers.wheels import make_wheel
from worker.images.pip import wheels_for

FORGED = "raise SystemExit('forged six: cached by another tenant')\n"


def _six(requirement: str, cache: Path) -> Path:
    """The six wheel a build resolving `requirement` installs (as every build resolves
    its pins: worker.userenv.wheels)."""
    [six] = [w.path for w in wheels_for([requirement], cache) if w.name == "six"]
    return six


def _forged(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(b"forged six" in z.read(n) for n in z.namelist())


def test_a_wheel_another_tenant_left_in_the_cache_is_not_offered(tmp_path):
    cache = tmp_path / "wheels"
    real = _six("six==1.17.0", tmp_path / "reference")
    # What tenant A's builds left in the shared cache: a six newer than any on the
    # index, and a file named like the index's six 1.17.0 with other content.
    make_wheel(cache, "six", FORGED, version="99.0")
    make_wheel(cache, "six", FORGED, version="1.17.0", tag="py2.py3-none-any")
    unpinned = _six("six", cache)
    assert unpinned.name == "six-1.17.0-py2.py3-none-any.whl", unpinned
    assert not _forged(unpinned)
    pinned = _six("six==1.17.0", cache)
    assert not _forged(pinned)
    assert hashlib.sha256(pinned.read_bytes()).digest() == \
        hashlib.sha256(real.read_bytes()).digest()


def test_a_cached_wheel_whose_content_changed_is_fetched_again(tmp_path):
    cache = tmp_path / "wheels"
    first = _six("six==1.17.0", cache)
    good = first.read_bytes()
    forged = make_wheel(tmp_path / "forge", "six", FORGED, version="1.17.0",
                        tag="py2.py3-none-any")
    first.write_bytes(forged.read_bytes())  # the cached file, changed in place
    again = _six("six==1.17.0", cache)
    assert again.read_bytes() == good
