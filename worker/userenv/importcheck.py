"""Build-time import check: every pinned distribution's top-level modules import.

Standard library only: it runs under the user's interpreter in the environment just
built (`<python> -I importcheck.py PIN...`), in the Docker build and for the process
sandbox's venv, so an incompatible pin fails the build, not the first refresh. Prints
one line per failure, `import check: package 'PIN': import MODULE failed: ERROR`, and
exits 1 if there was any.

In a container (the Docker build's check, worker/images/checkrun.py), the builder sets
`HANGUP_ENV` to the connector's timeout and holds the container's stdin open: the check
ends itself when the builder hangs up (it died: an import that never returns must not
run on for nobody) or when that time has passed, whichever comes first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import select
import sys
import threading

# Top-level names that ship in some wheels but are not the package's API.
_NOT_API = frozenset(("test", "tests", "testing", "docs", "doc", "examples", "benchmarks"))
HANGUP_ENV = "CONNECTOR_CHECK_HANGUP"
HUNG_UP = 3  # the exit code when it ended itself: nobody is left to read it


def dist_name(pin: str) -> str:
    """'pandas[performance] == 1.5.3' -> 'pandas'."""
    return re.split(r"[\[<>=!~\s;]", pin.strip(), maxsplit=1)[0]


def top_level_modules(dist: importlib.metadata.Distribution) -> list[str]:
    """Importable top-level names the distribution installed. top_level.txt may list
    names it did not install (pyarrow's `__dummy__`): only names with files count."""
    shipped: list[str] = []
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
            continue
        if len(parts) > 1:
            shipped.append(parts[0])
        elif parts[0].endswith(".py"):
            shipped.append(parts[0][:-3])
        elif parts[0].endswith((".so", ".pyd")):
            shipped.append(parts[0].split(".")[0])
    text = dist.read_text("top_level.txt")
    listed = [n.strip() for n in (text or "").split() if n.strip()]
    names = [n for n in listed if n in shipped] if listed else shipped
    keep = [n for n in names if n.isidentifier() and n not in _NOT_API and n != "__pycache__"]
    return list(dict.fromkeys(keep))


def check(pins: list[str]) -> list[str]:
    failures = []
    for pin in pins:
        name = dist_name(pin)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            failures.append(f"package {pin!r}: {name} is not installed")
            continue
        for module in top_level_modules(dist):
            try:
                importlib.import_module(module)
            except BaseException as e:  # noqa: BLE001 - any failure is the finding
                reason = f"{type(e).__name__}: {e}".strip().splitlines()
                failures.append(f"package {pin!r}: import {module} failed: "
                                f"{' '.join(x.strip() for x in reason if x.strip())}")
    return failures


def end_on_hangup(seconds: float) -> None:
    """A thread that ends this process when stdin hangs up or `seconds` have passed
    (started before any import: `os._exit` is bound before a package could replace it)."""
    end = os._exit
    poller = select.poll()
    poller.register(0, 0)  # no events asked for: POLLHUP/POLLERR only

    def watch() -> None:
        deadline_ms = int(seconds * 1000)
        for _, ev in poller.poll(deadline_ms):
            if ev & select.POLLNVAL:  # an import closed fd 0: the deadline alone stands
                threading.Event().wait(seconds)
        end(HUNG_UP)

    threading.Thread(target=watch, name="hangup", daemon=True).start()


def main(argv: list[str]) -> int:
    if seconds := os.environ.get(HANGUP_ENV):
        end_on_hangup(float(seconds))
    failures = check(argv[1:])
    for f in failures:
        print(f"import check: {f}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
