"""A source distribution whose build backend runs code: what a hostile requirement
would make pip execute while it only prepares metadata."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

BACKEND = '''
import os
open({marker!r}, "w").write("build backend ran as uid %d\\n" % os.getuid())

def get_requires_for_build_wheel(config_settings=None):
    return []

def prepare_metadata_for_build_wheel(directory, config_settings=None):
    info = os.path.join(directory, "evil-1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: evil\\nVersion: 1.0\\n")
    return "evil-1.0.dist-info"
'''

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
"""


def backend_sdist(folder: Path, marker: Path) -> Path:
    """`folder/evil-1.0.tar.gz`, whose in-tree backend writes `marker` when pip asks it
    for metadata (no build dependencies, so no index is needed)."""
    path = folder / "evil-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("pyproject.toml", PYPROJECT),
                           ("backend.py", BACKEND.format(marker=str(marker)))):
            body = text.encode()
            info = tarfile.TarInfo(f"evil-1.0/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path
