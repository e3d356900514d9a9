"""Build-time import check: every pinned distribution's top-level modules import.

Standard library only: it runs under the user's interpreter in the environment just
built (`<python> -I importcheck.py PIN...`), in the Docker build and for the process
sandbox's venv, so an incompatible pin fails the build, not the first refresh. Prints
one line per failure, `import check: package 'PIN': import MODULE failed: ERROR`, and
exits 1 if there was any.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys

# Top-level names that ship in some wheels but are not the package's API.
_NOT_API = frozenset(("test", "tests", "testing", "docs", "doc", "examples", "benchmarks"))


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


def main(argv: list[str]) -> int:
    failures = check(argv[1:])
    for f in failures:
        print(f"import check: {f}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
