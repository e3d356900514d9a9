"""Finding a connector's code image: the tag is a hash of every byte of the folder, and
an unchanged folder gets the same tag again without its files being read (a folder with
data files would otherwise pay for hashing them on every Docker refresh and test)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_connector
from worker.folder import FolderFile
from worker.images import connector_tag, remembered
from worker.settings import settings
from worker.spec import load_connector

BASE = "sha256:" + "0" * 64
CODE = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield open(__file__.replace("connector.py", "data.csv"), "rb").read()
"""
SPEC = "name: tagged\nschema:\n  - {name: id, type: int64}\n"


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cache = tmp_path / "build-cache"
    monkeypatch.setenv("CONNECTOR_BUILD_CACHE", str(cache))
    settings.cache_clear()
    yield cache
    monkeypatch.undo()
    settings.cache_clear()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folder files read (by name) from here on."""
    seen: list[str] = []
    real = FolderFile.read_bytes

    def counting(self: FolderFile) -> bytes:
        seen.append(self.name)
        return real(self)
    monkeypatch.setattr(FolderFile, "read_bytes", counting)
    return seen


def later(monkeypatch: pytest.MonkeyPatch, seconds: float = 10.0) -> None:
    """Hash as if `seconds` had passed since the folder was written."""
    monkeypatch.setattr(remembered, "_now_ns", lambda: time.time_ns() + int(seconds * 1e9))


def folder(tmp_path: Path, data: str = "id\n1\n2\n") -> Path:
    return write_connector(tmp_path / "tagged", CODE, SPEC, {"data.csv": data})


def test_an_unchanged_folder_gets_its_tag_again_without_reading_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: list[str]) -> None:
    path = folder(tmp_path)
    later(monkeypatch)
    first = connector_tag(BASE, load_connector(path))
    assert "data.csv" in reads
    reads.clear()
    assert connector_tag(BASE, load_connector(path)) == first
    assert reads == []


def test_a_file_rewritten_with_its_size_and_mtime_kept_gets_a_new_tag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_cache: Path) -> None:
    path = folder(tmp_path, "id\n1\n2\n")
    later(monkeypatch)
    first = connector_tag(BASE, load_connector(path))
    data = path / "data.csv"
    st = data.stat()
    data.write_text("id\n3\n4\n")
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # the ctime still moves
    later(monkeypatch, 20.0)
    second = connector_tag(BASE, load_connector(path))
    assert second != first
    # the very tag a folder never seen before gets
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "tagged").mkdir()
    for f in path.iterdir():
        (fresh / "tagged" / f.name).write_bytes(f.read_bytes())
    assert connector_tag(BASE, load_connector(fresh / "tagged")).split(":")[1] == \
        second.split(":")[1]


def test_other_inputs_than_the_files_change_the_tag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder(tmp_path)
    later(monkeypatch)
    first = connector_tag(BASE, load_connector(path))
    assert connector_tag("sha256:" + "1" * 64, load_connector(path)) != first
    assert connector_tag(BASE, load_connector(path)) == first


def test_a_folder_changed_moments_ago_is_read_every_time(
        tmp_path: Path, reads: list[str]) -> None:
    # A file written again within its timestamps' resolution could look unchanged, so
    # a folder younger than a couple of seconds is never taken on trust.
    path = folder(tmp_path)
    first = connector_tag(BASE, load_connector(path))
    reads.clear()
    assert connector_tag(BASE, load_connector(path)) == first
    assert "data.csv" in reads


def test_a_damaged_cache_entry_only_means_reading_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build_cache: Path,
        reads: list[str]) -> None:
    path = folder(tmp_path)
    later(monkeypatch)
    first = connector_tag(BASE, load_connector(path))
    for entry in build_cache.rglob("*.json"):
        entry.write_text("{not json")
    reads.clear()
    assert connector_tag(BASE, load_connector(path)) == first
    assert "data.csv" in reads
