"""JSON Lines with nested objects, flattened by the built-in parser."""

import hashlib
from pathlib import Path

FILES = Path(__file__).resolve().parent / "files"


def list_objects(context, metadata):
    for f in sorted(FILES.glob("*.jsonl")):
        yield {"name": f.name, "fingerprint": hashlib.sha1(f.read_bytes()).hexdigest()}


def read_bytes(context, metadata):
    yield (FILES / metadata["name"]).read_text()
