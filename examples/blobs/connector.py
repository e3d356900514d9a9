"""Blob-store style: the bundled files/ tree is listed level by level as nested prefixes."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "files"


def context(credentials):
    return {"root": str(ROOT)}


def list_objects(context, metadata):
    base = Path(context["root"])
    here = base / metadata["name"] if metadata else base
    for entry in sorted(here.iterdir()):
        name = str(entry.relative_to(base))
        if entry.is_dir():
            yield {"name": name, "fingerprint": "", "is_prefix": True}
        else:
            digest = hashlib.md5(entry.read_bytes()).hexdigest()
            yield {"name": name, "fingerprint": digest, "is_prefix": False}


def read_bytes(context, metadata):
    with open(Path(context["root"]) / metadata["name"], "rb") as f:
        while chunk := f.read(64 * 1024):
            yield chunk
