"""Which of the worker package's files the base image carries: the sandbox runtime.

The whole `worker/runtime/` package (subpackages included) and the package's
`__init__.py`, plus every `worker` module they import, followed import by import (read
with `ast`, never executed). Host-only modules (CLI, images, queue) stay out of the image
and out of its hash, so they change without rebuilding every image.
"""

from __future__ import annotations

import ast
from pathlib import Path

from worker.folder import FolderFile, walk_folder

WORKER_DIR = Path(__file__).resolve().parent.parent
ROOTS = ("__init__.py", "runtime/")


def _candidates(module: str) -> list[str]:
    """File names (inside worker/) that importing `module` ("worker.a.b") may load: its
    packages' __init__.py files and the module itself, as a file or as a package."""
    parts = module.split(".")[1:]
    names = ["/".join([*parts[:i], "__init__.py"]) for i in range(len(parts))]
    if parts:
        names += ["/".join(parts) + ".py", "/".join([*parts, "__init__.py"])]
    return names


def _imported(f: FolderFile) -> set[str]:
    """The `worker...` modules a file imports (anywhere in it), relative imports resolved."""
    package = ["worker", *f.name.split("/")[:-1]]
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_bytes(), filename=str(f.path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # may be submodules
    return {m for m in out if m == "worker" or m.startswith("worker.")}


def runtime_files() -> list[FolderFile]:
    """The runtime's .py files, in the walker's order."""
    files = {f.name: f for f in walk_folder(WORKER_DIR) if f.name.endswith(".py")}
    wanted = {n for n in files if n.startswith(ROOTS)}
    todo = list(wanted)
    while todo:
        for module in _imported(files[todo.pop()]):
            for name in _candidates(module):
                if name in files and name not in wanted:
                    wanted.add(name)
                    todo.append(name)
    return [f for n, f in files.items() if n in wanted]
