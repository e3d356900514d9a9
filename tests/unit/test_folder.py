"""The connector-folder walker: regular files only, nothing reached through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.folder import FolderError, walk_folder


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "c"
    (src / "sub").mkdir(parents=True)
    (src / "connector.py").write_text("x = 1\n")
    (src / "sub" / "data.csv").write_text("a\n")
    (src / "zz.py").write_text("")
    return src


def test_walk_lists_regular_files_in_a_stable_order_without_caches(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    for junk in ("__pycache__", ".git", ".venv", "node_modules", ".ruff_cache"):
        (src / junk).mkdir()
        (src / junk / "x.py").write_text("")
    (src / "old.pyc").write_bytes(b"\0")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    files = walk_folder(src)
    assert [f.name for f in files] == ["connector.py", "run.sh", "zz.py", "sub/data.csv"]
    assert [f.executable for f in files] == [False, True, False, False]
    assert files[0].size == 6 and files[0].path == src / "connector.py"


def test_link_out_of_the_folder_is_refused_naming_it(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    (tmp_path / "secret").write_text("host file")
    (src / "sub" / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(FolderError, match=r"sub/leak: symbolic link to .*secret"):
        walk_folder(src)


def test_linked_directory_is_refused_not_followed(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    (src / "etc").symlink_to("/etc", target_is_directory=True)
    with pytest.raises(FolderError, match=r"etc: symbolic link to /etc"):
        walk_folder(src)


def test_link_inside_the_folder_is_refused_too(tmp_path: Path) -> None:
    # Links are refused whatever they point at: the walker never has to decide whether a
    # chain of links stays inside, and a bundle is the same on every machine.
    src = _folder(tmp_path)
    (src / "latest.csv").symlink_to("sub/data.csv")
    with pytest.raises(FolderError, match=r"latest.csv: symbolic link"):
        walk_folder(src)


def test_special_files_are_refused(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    os.mkfifo(src / "pipe")
    with pytest.raises(FolderError, match=r"pipe: not a regular file"):
        walk_folder(src)


def test_excluded_files_are_skipped_even_when_they_are_links(tmp_path: Path) -> None:
    # The credentials file may well be a link to the user's secrets: it is never packed.
    src = _folder(tmp_path)
    (tmp_path / "token").write_text("hunter2")
    (src / "secret.txt").symlink_to(tmp_path / "token")
    names = [f.name for f in walk_folder(src, exclude=[src / "secret.txt"])]
    assert names == ["connector.py", "zz.py", "sub/data.csv"]


def test_limits_on_file_count_and_total_size(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    with pytest.raises(FolderError, match=r"more than 2 files"):
        walk_folder(src, max_files=2)
    with pytest.raises(FolderError, match=r"over the 7 byte limit"):
        walk_folder(src, max_bytes=7)
    assert len(walk_folder(src, max_files=3, max_bytes=8)) == 3


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read(tmp_path: Path) -> None:
    src = _folder(tmp_path)
    (tmp_path / "secret").write_text("host file")
    files = walk_folder(src)
    (src / "zz.py").unlink()
    (src / "zz.py").symlink_to(tmp_path / "secret")
    swapped = next(f for f in files if f.name == "zz.py")
    with pytest.raises(FolderError, match=r"zz.py: cannot be read: became a symbolic link"):
        swapped.read_bytes()
    assert files[0].read_bytes() == b"x = 1\n"


@pytest.mark.parametrize("where", ["file", "directory"])
def test_a_name_that_is_not_utf8_is_refused_naming_it(tmp_path: Path, where: str) -> None:
    # It packed into a bundle and deployed, then every worker's image build crashed on it
    # (UnicodeEncodeError hashing the name): retried as infra, blamed on the platform.
    src = _folder(tmp_path)
    if where == "file":
        with open(os.fsencode(src / "sub") + b"/caf\xe9.csv", "w") as f:
            f.write("a\n")
    else:
        os.mkdir(os.fsencode(src) + b"/d\xff")
        with open(os.fsencode(src) + b"/d\xff/x.py", "w") as f:
            f.write("")
    bad = "sub/caf\\udce9.csv" if where == "file" else "d\\udcff"
    with pytest.raises(FolderError) as e:
        walk_folder(src)
    assert f"{bad}: the name is not UTF-8 text" in str(e.value), str(e.value)


def test_deploys_bundle_refuses_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    from worker.bundle import BundleError, make_bundle

    src = _folder(tmp_path)
    with open(os.fsencode(src) + b"/\xff.txt", "w") as f:
        f.write("x")
    with pytest.raises(BundleError, match="the name is not UTF-8 text"):
        make_bundle(src, [])
