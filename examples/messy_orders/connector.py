"""A CSV export with the usual damage: a title line, comments, a short row, bad values.

Nothing is lost silently: rows that cannot be taken land in the rejects dataset
(`connector show examples/messy_orders --rejects`), values replaced by a default are
recorded there too, and the refresh summary counts both.
"""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "files"


def list_objects(context, metadata):
    for f in sorted(ROOT.glob("*.csv")):
        yield {"name": f.name, "fingerprint": hashlib.md5(f.read_bytes()).hexdigest()}


def read_bytes(context, metadata):
    yield (ROOT / metadata["name"]).read_bytes()
