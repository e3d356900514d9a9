"""Runs inside the packages image's build stage, with the image's own Python.

`delta.py snapshot ROOT LIST` records every file (and link) under ROOT with its size and
mtime; `delta.py copy ROOT LIST DEST` copies the new or changed ones to DEST, so the final
stage carries only what `pip install` added to /opt/venv.
"""

import os
import shutil
import sys


def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def snapshot(root, listing):
    with open(listing, "w") as f:
        for p, (size, mtime) in walk(root).items():
            f.write(f"{size} {mtime} {p}\n")


def copy(root, listing, dest):
    before = {}
    with open(listing) as f:
        for line in f:
            size, mtime, p = line.rstrip("\n").split(" ", 2)
            before[p] = (int(size), int(mtime))
    os.makedirs(dest, exist_ok=True)
    n = 0
    for p, meta in walk(root).items():
        if before.get(p) == meta:
            continue
        target = dest + p
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(p):
            os.symlink(os.readlink(p), target)
        else:
            shutil.copy2(p, target)
        n += 1
    print(f"delta: {n} new or changed files under {root}")


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(*sys.argv[2:4])
    else:
        copy(*sys.argv[2:5])
