"""A pin that pip reads as a file: `packages: ["evil-1.0.tar.gz"]` is a valid-looking
requirement, but pip takes a name ending in an archive extension as a path relative to
where it runs, and builds a source archive there (its setup.py runs on the host, even
with --only-binary=:all:). Run from inside a hostile connector folder that ships the
archive (`cd orders && connector build .`), that is the tenant's code on the host,
outside every sandbox."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE
from worker.images.pip import PipFailure, wheels_for

SETUP = """
import pathlib
pathlib.Path({marker!r}).write_text("the tenant's setup.py ran on the host")
from setuptools import setup
setup(name="evil", version="1.0")
"""


def _sdist(folder: Path, marker: Path) -> str:
    """evil-1.0.tar.gz in `folder`: an sdist whose setup.py writes `marker`."""
    name = "evil-1.0.tar.gz"
    with tarfile.open(folder / name, "w:gz") as tar:
        data = SETUP.format(marker=str(marker)).encode()
        info = tarfile.TarInfo("evil-1.0/setup.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return name


@pytest.mark.parametrize("pin", ["evil-1.0.tar.gz", "evil-1.0-py3-none-any.whl", "evil.zip",
                                 "evil.tgz", "evil-1.0.tar"])
def test_a_pin_pip_would_read_as_a_file_is_refused_naming_it(connector, cli, pin) -> None:
    c = connector(ECHO_CODE, f'name: pins\npackages: ["{pin}"]\n')
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    said = " ".join(r.stderr.split())
    assert f"packages: {pin!r} names a file (pip reads a requirement ending in" in said, said


def test_the_hosts_pip_never_reads_a_file_where_it_runs(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    marker = tmp_path / "PWNED"
    name = _sdist(folder, marker)
    monkeypatch.chdir(folder)  # `connector build .` from inside the folder
    with pytest.raises(PipFailure):
        wheels_for([name], tmp_path / "cache")
    assert not marker.exists(), marker.read_text()
