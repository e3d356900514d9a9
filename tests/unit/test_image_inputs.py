"""What goes into the base image: the sandbox runtime and every worker module it imports,
nothing host-only. Computed from the sources, so a new runtime module or subpackage is
carried without anyone listing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.images.runtime import WORKER_DIR, _candidates, _imported, runtime_files


def test_base_image_carries_the_whole_runtime_package() -> None:
    names = {f.name for f in runtime_files()}
    runtime = {p.relative_to(WORKER_DIR).as_posix() for p in (WORKER_DIR / "runtime").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert runtime and runtime <= names


def test_base_image_carries_what_the_runtime_imports_and_no_host_module() -> None:
    files = runtime_files()
    names = {f.name for f in files}
    for f in files:  # closed under imports: nothing the sandbox imports is missing
        for module in _imported(f):
            present = [n for n in _candidates(module) if (WORKER_DIR / n).is_file()]
            assert set(present) <= names, f"{f.name} imports {module}"
    assert {"protocol.py", "spec.py", "__init__.py"} <= names
    host_only = ("cli.py", "images/", "queue/", "sandbox/", "registry.py", "bundle.py")
    assert not [n for n in names if n.startswith(host_only)]


def test_a_new_runtime_subpackage_and_its_imports_are_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.images.runtime as rt

    root = tmp_path / "worker"
    (root / "runtime" / "formats").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "runtime" / "__init__.py").write_text("")
    (root / "runtime" / "main.py").write_text("from worker.runtime.formats import csv\n")
    (root / "runtime" / "formats" / "__init__.py").write_text("from .registry import get\n")
    (root / "runtime" / "formats" / "registry.py").write_text(
        "import worker.types\nfrom .. import main\n")
    (root / "types.py").write_text("")
    (root / "cli.py").write_text("import worker.runtime.main\n")
    monkeypatch.setattr(rt, "WORKER_DIR", root)
    assert sorted(f.name for f in rt.runtime_files()) == [
        "__init__.py", "runtime/__init__.py", "runtime/formats/__init__.py",
        "runtime/formats/registry.py", "runtime/main.py", "types.py"]
