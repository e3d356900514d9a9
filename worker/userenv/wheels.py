"""The wheels of a connector's user environment: the defaults, then the user's pins.

Both sandboxes install the same two sets the same way: the default packages first,
then the wheels the user's pins resolved to (exactly those of connector.lock when the
folder has one: worker/userenv/lock.py), each set with `--no-deps` so nothing is
re-resolved against what is already installed. The pins are resolved alone, never
against the defaults or the runtime: a pin replaces the default version of the same
distribution (requests==2.25.1 brings idna 2.10 over the default idna), as the hosted
product promises ("versions you install take precedence over the default packages").
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from worker.errors import ConfigError, FailureKind
from worker.images.connector import _resolve_error
from worker.images.errors import ImageBuildError
from worker.images.pip import PipFailure, resolve, wheels_for
from worker.images.tags import normalize_pins
from worker.spec import Connector
from worker.userenv.lock import lock_path, locked_requirements, read_lock, warn_unpinned

DEFAULTS_FILE = Path(__file__).with_name("defaults.txt")
IMPORT_CHECK = Path(__file__).with_name("importcheck.py")


class UserWheels(NamedTuple):
    defaults: list[Path]
    pins: list[Path]


def default_pins() -> list[str]:
    lines = DEFAULTS_FILE.read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def user_wheels(connector: Connector, wheel_cache: Path) -> UserWheels:
    """Download (or find in the cache) both sets; ImageBuildError names a bad pin."""
    try:
        defaults = [w.path for w in wheels_for(default_pins(), wheel_cache)]
    except PipFailure as e:
        raise ImageBuildError(f"the default packages could not be resolved: {e.reason}",
                              kind=FailureKind.INFRA) from None
    pins = normalize_pins(connector.spec.packages)
    if not pins:
        return UserWheels(defaults, [])
    requirements = locked_requirements(connector)
    try:
        wheels = wheels_for(requirements, wheel_cache)
    except PipFailure as e:
        raise _resolve_error(connector, requirements, e) from None
    if read_lock(connector) is None:
        warn_unpinned(connector, wheels)
    return UserWheels(defaults, [w.path for w in wheels])


def lock_text(connector: Connector) -> str:
    """The lock's bytes, an input of every environment's hash ('' without one)."""
    path = lock_path(connector)
    return path.read_text() if path.is_file() else ""


def check_pins(connector: Connector) -> None:
    """The connector's pins (its lock's versions, when it has one) resolve as a build
    would resolve them; ConfigError naming the pin and pip's reason when they do not.
    Deploy checks this: the build happens later, on a worker, where a bad pin would
    fail every refresh. pip's dry run only: nothing is downloaded into the cache."""
    if not normalize_pins(connector.spec.packages):
        return
    requirements = locked_requirements(connector)
    try:
        resolve(requirements)
    except PipFailure as e:
        raise ConfigError(_resolve_error(connector, requirements, e).message) from None
