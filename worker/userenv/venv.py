"""The process sandbox's user environments: one venv per set of pins, built once.

A venv lives under `<build cache>/userenvs/<key>`, key = hash(the base interpreter's
version, platform, default packages, sorted pins, connector.lock): connectors with the
same pins share it, and a second refresh finds it ready. It gets the same wheels,
installed the same way, as the Docker image's /opt/user (see worker/userenv/wheels.py),
with `uv` (a venv with the defaults in well under a second, against seconds for venv +
pip; see bench/README).
The build ends with the import check; an environment that fails it is removed, and the
failure names the pin. A `.ready` file written last marks a finished environment, and
concurrent builds of one key serialize on a file lock.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

from worker.errors import ConfigError, FailureKind
from worker.images.cache import wheel_cache_dir
from worker.images.errors import ImageBuildError
from worker.images.once import file_lock
from worker.images.pip import PY_VERSION
from worker.images.tags import digest, normalize_pins
from worker.settings import settings
from worker.spec import Connector
from worker.userenv.wheels import DEFAULTS_FILE, IMPORT_CHECK, lock_text, user_wheels

READY = ".ready"


def base_python() -> tuple[str, str]:
    """The interpreter venvs are made from and its version: CONNECTOR_USER_BASE_PYTHON,
    else the one this process runs on (its base, not a venv: user envs never see the
    project's). Asked once per session open: the version costs a process start."""
    configured = settings().user_base_python
    python = str(configured) if configured else sys._base_executable
    version = _version(python)
    if version.rsplit(".", 1)[0] != PY_VERSION:
        raise ConfigError(f"the process sandbox builds user environments for Python "
                          f"{PY_VERSION} (the wheels the images use), but {python} is "
                          f"Python {version}: set CONNECTOR_USER_BASE_PYTHON to a Python "
                          f"{PY_VERSION} interpreter")
    return python, version


def _version(python: str) -> str:
    r = subprocess.run([python, "-I", "-c", "import platform; print(platform.python_version())"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"{python} does not run: {r.stderr.strip()[-500:]}")
    return r.stdout.strip()


def env_key(version: str, connector: Connector) -> str:
    return digest(["userenv", version, platform.machine(), DEFAULTS_FILE.read_text(),
                   *normalize_pins(connector.spec.packages), "--lock--", lock_text(connector)])


def user_python(connector: Connector) -> str:
    """The interpreter of the connector's user environment, built if missing."""
    python, version = base_python()
    key = env_key(version, connector)
    root = settings().build_cache / "userenvs" / key
    if (root / READY).is_file():
        return str(root / "bin" / "python")
    with file_lock(f"userenv-{key}"):
        if not (root / READY).is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that died half-way
            try:
                _build(connector, python, root)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
            (root / READY).write_text(key + "\n")
    return str(root / "bin" / "python")


def _uv(*args: str) -> None:
    r = subprocess.run([find_uv_bin(), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageBuildError(f"uv {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                              f"{r.stderr.strip()[-2000:]}", kind=FailureKind.INFRA)


def _build(connector: Connector, python: str, root: Path) -> None:
    wheels = user_wheels(connector, wheel_cache_dir())
    root.parent.mkdir(parents=True, exist_ok=True)
    _uv("venv", "--quiet", "--python", python, str(root))
    target = str(root / "bin" / "python")
    for group in (wheels.defaults, wheels.pins):
        if group:
            _uv("pip", "install", "--quiet", "--offline", "--no-index", "--no-deps",
                "--python", target, *map(str, group))
    pins = normalize_pins(connector.spec.packages)
    r = subprocess.run([target, "-I", str(IMPORT_CHECK), *pins], capture_output=True,
                       text=True, cwd=str(root))
    if r.returncode != 0:
        found = [ln.removeprefix("import check: ") for ln in r.stdout.splitlines()
                 if ln.startswith("import check: ")]
        detail = "; ".join(found) or r.stderr.strip()[-2000:]
        raise ImageBuildError(f"connector {connector.spec.name!r}: the environment of its "
                              f"packages does not import: {detail}")
