"""Wheels a test makes on the spot: a package whose import runs the test's code (anyone
can publish one to an index), put in a folder pip reads as an index (`index_folder`)
or, to play what an earlier build left behind, in a wheel cache."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest


def _record_line(name: str, body: bytes) -> str:
    h = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    return f"{name},sha256={h},{len(body)}"


def make_wheel(folder: Path, dist: str, init: str, version: str = "1.0",
               tag: str = "py3-none-any") -> Path:
    """`folder/<dist>-<version>-<tag>.whl` whose package `<dist>` runs `init` on import."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": init.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                            .encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         f"Tag: {tag}\n".encode(),
        f"{info}/top_level.txt": f"{dist}\n".encode(),
    }
    record = [_record_line(n, b) for n, b in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, body in files.items():
            z.writestr(name, body)
    return path


def index_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`folder`, which the builds of this test's process read as one more index
    (`PIP_FIND_LINKS`, as an operator configures pip): the wheel cache never is one."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder
