"""Wheels a test makes on the spot: a package whose import runs the test's code (anyone
can publish one to an index), put in a wheel cache the build resolves pins from."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_line(name: str, body: bytes) -> str:
    h = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    return f"{name},sha256={h},{len(body)}"


def make_wheel(cache: Path, dist: str, init: str) -> None:
    """`cache/<dist>-1.0-py3-none-any.whl` whose package `<dist>` runs `init` on import."""
    cache.mkdir(parents=True, exist_ok=True)
    info = f"{dist}-1.0.dist-info"
    files = {
        f"{dist}/__init__.py": init.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
        f"{info}/top_level.txt": f"{dist}\n".encode(),
    }
    record = [_record_line(n, b) for n, b in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(cache / f"{dist}-1.0-py3-none-any.whl", "w") as z:
        for name, body in files.items():
            z.writestr(name, body)
