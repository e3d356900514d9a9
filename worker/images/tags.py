"""Content-addressed tags: a tag is a short hash of everything that went into the image.

Same inputs, same tag; a tag that exists is never rebuilt. Each layer's module says which
inputs its tag covers; the hashing is here, once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence

from worker.folder import FolderFile

HASH_LEN = 16

# Every image the project makes carries this label (base, os, packages, connector): the
# image store (store.py) judges only images that do.
LABEL_KIND = "io.connector.kind"


def digest(parts: Iterable[str | bytes]) -> str:
    """A hash of the parts, each length-prefixed so no two sequences run together."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:HASH_LEN]


def tree_parts(files: Sequence[FolderFile]) -> Iterator[str | bytes]:
    """The hash inputs of a set of files: each file's name inside its folder, then its bytes."""
    for f in files:
        yield f.name
        yield f.read_bytes()


def normalize_pins(pins: Iterable[str]) -> list[str]:
    """Pins without whitespace, sorted and deduplicated: their order is not an input."""
    return sorted({re.sub(r"\s+", "", p) for p in pins})
