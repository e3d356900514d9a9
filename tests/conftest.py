"""Shared fixtures: connector folders written on the fly, and the CLI run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_connector(folder: Path, code: str, spec: str,
                    files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connector.py").write_text(textwrap.dedent(code))
    (folder / "connector.yaml").write_text(textwrap.dedent(spec))
    for name, text in (files or {}).items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return folder


@pytest.fixture
def connector(tmp_path: Path) -> Callable[..., Path]:
    """connector(code, spec, name="c", files=None) -> folder path."""

    def make(code: str, spec: str, name: str = "c", files: dict[str, str] | None = None) -> Path:
        return write_connector(tmp_path / name, code, spec, files)

    return make


class Cli:
    def __init__(self, output: Path) -> None:
        self.output = output

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 240) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "CONNECTOR_OUTPUT": str(self.output), **(env or {})}
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, env=full_env, timeout=timeout)

    def refresh(self, path: Path, *extra: str, sandbox: str = "process",
                env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
        r = self("refresh", str(path), "--json", "--sandbox", sandbox, *extra, env=env)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        return r, (json.loads(lines[-1]) if lines else {})

    def rows(self, path: Path) -> list[dict]:
        r = self("show", str(path), "--jsonl")
        assert r.returncode == 0, r.stderr
        return [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "out")
