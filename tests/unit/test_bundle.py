"""Deploy bundles: reproducible, content-hashed, without the credentials file."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.helpers.bundle_bombs import tar_gz
from worker.bundle import (
    MAX_BUNDLE_BYTES,
    MAX_FILES,
    MAX_UNPACKED_BYTES,
    BundleError,
    make_bundle,
    unpack_bundle,
)


def test_bundle_is_reproducible_and_excludes_secrets(tmp_path):
    src = tmp_path / "c"
    (src / "sub").mkdir(parents=True)
    (src / "connector.py").write_text("x = 1\n")
    (src / "sub" / "data.csv").write_text("a\n")
    (src / "secret.txt").write_text("hunter2")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "connector.cpython-311.pyc").write_bytes(b"\0")
    data, digest = make_bundle(src, [src / "secret.txt"])
    os.utime(src / "connector.py", (0, 12345))  # times do not change the hash
    assert make_bundle(src, [src / "secret.txt"]) == (data, digest)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["connector.py", "sub/data.csv"]
    (src / "connector.py").write_text("x = 2\n")
    assert make_bundle(src, [src / "secret.txt"])[1] != digest

    out = unpack_bundle(data, digest, tmp_path / "cache")
    assert (out / "sub" / "data.csv").read_text() == "a\n"
    assert unpack_bundle(data, digest, tmp_path / "cache") == out


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "c"
    src.mkdir()
    (src / "connector.py").write_text("x = 1\n")
    return src


def test_bundle_refuses_a_link_instead_of_dropping_it(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    (tmp_path / "outside.txt").write_text("host file")
    (src / "data.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(BundleError, match=r"data.txt: symbolic link to .*outside.txt"):
        make_bundle(src)


def test_bundle_refuses_a_folder_that_unpacks_too_big(tmp_path: Path) -> None:
    # A sparse file compresses to almost nothing: the compressed cap alone lets it through.
    src = _folder(tmp_path)
    with open(src / "zeros.bin", "wb") as f:
        f.truncate(MAX_UNPACKED_BYTES + 1)
    with pytest.raises(BundleError, match=r"over the \d+ byte limit"):
        make_bundle(src)


def test_bundle_refuses_too_many_files(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    for i in range(MAX_FILES):
        (src / f"f{i}").touch()
    with pytest.raises(BundleError, match=rf"more than {MAX_FILES} files"):
        make_bundle(src)


def test_unpack_refuses_a_bundle_that_unpacks_huge(tmp_path: Path) -> None:
    data, digest = tar_gz([("connector.py", 10), ("bomb.bin", 2 * MAX_UNPACKED_BYTES)])
    assert len(data) < MAX_BUNDLE_BYTES // 16  # small enough for the compressed cap
    with pytest.raises(BundleError, match=r"unpacks to more than \d+ bytes"):
        unpack_bundle(data, digest, tmp_path / "cache")
    assert not (tmp_path / "cache" / digest).exists()
    assert [p for p in (tmp_path / "cache").iterdir()] == []  # nothing half-unpacked left


def test_unpack_refuses_a_bundle_of_too_many_files(tmp_path: Path) -> None:
    data, digest = tar_gz([(f"f{i}", 0) for i in range(MAX_FILES + 1)])
    with pytest.raises(BundleError, match=rf"more than {MAX_FILES} files"):
        unpack_bundle(data, digest, tmp_path / "cache")
    assert not (tmp_path / "cache" / digest).exists()


def test_unpack_refuses_links_in_a_bundle(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    data = raw.getvalue()
    with pytest.raises(BundleError, match=r"passwd: .*not a regular file"):
        unpack_bundle(data, hashlib.sha256(data).hexdigest(), tmp_path / "cache")
