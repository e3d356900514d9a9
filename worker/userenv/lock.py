"""`connector.lock`: the versions a connector's `packages` resolved to, beside its code.

`connector lock PATH` resolves the pins (for the image's Python and platform, as a build
does) and writes every distribution they brought, `name==version`, under a header line
holding the pins it was made for. Builds and deploys honour it: while it exists and was
made for the same pins, the environment installs exactly its versions, in Docker and in
the process sandbox, whatever the index holds today. A lock made for other pins refuses
the build (run `connector lock` again). The lock is the tenant's file and its lines
reach pip's command line, so every line must be exactly `name==version` (a PEP 503
name, a PEP 440 version): an option (`--index-url`, `-r FILE`, `--no-binary`), a path,
a URL (`pkg @ file:///...`) or a marker would let it read the host's files, run a build
backend on the host or reach another index while resolving, and is refused, naming the
line. Without a lock, a requirement that is not pinned
to one version (`six`, `six>=1.10`) builds with a warning naming what it resolved to.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pydantic import BaseModel

from worker.errors import ConfigError
from worker.images.pip import Wheel, canonical_name, wheels_for
from worker.images.tags import normalize_pins
from worker.spec import Connector
from worker.userenv.importcheck import dist_name

LOCK_FILE = "connector.lock"
_HEADER = "# packages: "
# Every locked line reaches pip's command line on the host: a lock of a few hundred
# distributions is already a large environment, and far more would end in "Argument list
# too long" (an infrastructure failure) after seconds of parsing on every worker.
MAX_LOCK_BYTES = 64 << 10
MAX_LOCKED = 1000
log = logging.getLogger("worker.userenv")

# What `connector lock` writes: a name (PEP 508) and a public or local PEP 440 version.
_LOCKED = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?=="
                     r"(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?"
                     r"(?:\.post[0-9]+)?(?:\.dev[0-9]+)?(?:\+[a-z0-9]+(?:\.[a-z0-9]+)*)?")


class Lock(BaseModel):
    packages: list[str]   # the pins it was made for, normalized
    resolved: list[str]   # name==version of every distribution they brought


def lock_path(connector: Connector) -> Path:
    return connector.path / LOCK_FILE


def read_lock(connector: Connector) -> Lock | None:
    path = lock_path(connector)
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size > MAX_LOCK_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a lock holds at most {MAX_LOCK_BYTES} "
                          "bytes (run `connector lock` again)")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    header = [ln for ln in lines if ln.startswith(_HEADER)]
    try:
        packages = json.loads(header[0].removeprefix(_HEADER)) if header else None
    except ValueError:
        packages = None
    if not isinstance(packages, list):
        raise ConfigError(f"{path}: not a lock file written by `connector lock` (its "
                          f"'{_HEADER.strip()}' line is missing or broken): run it again")
    resolved = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if not _LOCKED.fullmatch(line):
            raise ConfigError(f"{path} line {number}: {line!r} is not name==version (a "
                              "lock holds exact versions only, no options, paths or URLs):"
                              " run `connector lock` again")
        resolved.append(line)
        if len(resolved) > MAX_LOCKED:
            raise ConfigError(f"{path}: more than {MAX_LOCKED} locked distributions; a "
                              f"lock holds at most {MAX_LOCKED}")
    return Lock(packages=packages, resolved=resolved)


def locked_requirements(connector: Connector) -> list[str]:
    """What to resolve for the connector's pins: the lock's versions when it has one."""
    pins = normalize_pins(connector.spec.packages)
    lock = read_lock(connector)
    if lock is None:
        return pins
    if lock.packages != pins:
        raise ConfigError(f"{lock_path(connector)} was made for packages {lock.packages}, "
                          f"but connector.yaml has {pins}: run `connector lock` again")
    return lock.resolved


def warn_unpinned(connector: Connector, wheels: list[Wheel]) -> None:
    """A warning per requirement not pinned to one version, naming what it became."""
    versions = {w.name: w.version for w in wheels}
    for pin in normalize_pins(connector.spec.packages):
        if "==" in pin and "*" not in pin:
            continue
        name = canonical_name(dist_name(pin))
        log.warning("warning: connector %r: package %r is not pinned to one version; it "
                    "resolved to %s==%s (run `connector lock` to record it)",
                    connector.spec.name, pin, name, versions.get(name, "?"))


def write_lock(connector: Connector, wheel_cache: Path) -> list[str]:
    """Resolve the connector's pins afresh and write connector.lock; the resolved pins."""
    pins = normalize_pins(connector.spec.packages)
    resolved = sorted(w.pin for w in wheels_for(pins, wheel_cache)) if pins else []
    lock_path(connector).write_text(
        "# connector lock: the versions `packages` resolved to (written by `connector "
        "lock`; builds install exactly these)\n" + _HEADER + json.dumps(pins) + "\n"
        + "".join(f"{p}\n" for p in resolved))
    return resolved
