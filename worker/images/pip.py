"""Requirements resolved to wheels for the image's interpreter, on the host.

Two pip runs: `pip install --dry-run --ignore-installed --report` resolves the
requirements for the image's Python and platform (not the host's, and ignoring what the
host has installed) and says, as JSON, which distribution and file it chose for each;
`pip download --no-deps` then fetches exactly those into the shared wheel cache. Only
wheels are considered (`--only-binary=:all:`): nothing is ever built from source, on the
host or in the image. pip reports a failed resolution only as text, so the reason shown
to the user is picked out of pip's output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ValidationError

from worker.errors import ConnectorError
from worker.images.once import file_lock
from worker.images.tags import digest

# The interpreter and platform of the image (Debian bookworm's python3 is 3.11, glibc 2.36).
PY_VERSION = "3.11"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
IMPLEMENTATION = "cp"
ABI = "cp311"


class PipFailure(ConnectorError):
    """pip failed; `reason` is the relevant part of its output."""

    def __init__(self, reason: str, stderr: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr


class Wheel(BaseModel):
    """One distribution the resolver chose, and its wheel file in the cache."""

    name: str  # canonical: lower case, runs of -_. as one "-"
    version: str
    path: Path

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


# The parts of pip's installation report (https://pip.pypa.io/en/stable/reference/
# installation-report/) that are read here.
class _Metadata(BaseModel):
    name: str
    version: str


class _DownloadInfo(BaseModel):
    url: str


class _Install(BaseModel):
    metadata: _Metadata
    download_info: _DownloadInfo


class _Report(BaseModel):
    install: list[_Install]


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _target() -> list[str]:
    """pip's options selecting the image's interpreter and platform, wheels only."""
    return ["--disable-pip-version-check", "--only-binary=:all:", "--python-version",
            PY_VERSION, *[a for p in PLATFORMS for a in ("--platform", p)],
            "--implementation", IMPLEMENTATION, "--abi", ABI]


def _pip(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise PipFailure(_pip_reason(r.stdout, r.stderr), r.stderr)
    return r


def _resolve(requirements: Sequence[str], cache: Path) -> list[tuple[str, str, str]]:
    """(canonical name, version, wheel file name) of each distribution pip would install."""
    with tempfile.TemporaryDirectory() as td:
        report = Path(td) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
              *_target(), "--find-links", str(cache), *requirements])
        try:
            parsed = _Report.model_validate_json(report.read_text())
        except (OSError, ValidationError) as e:
            raise PipFailure(f"pip's installation report could not be read: {e}", "") from None
    return [(canonical_name(i.metadata.name), i.metadata.version,
             unquote(Path(urlparse(i.download_info.url).path).name)) for i in parsed.install]


def wheels_for(requirements: Sequence[str], cache: Path) -> list[Wheel]:
    """Resolve `requirements` to wheels in `cache` for the image's Python and platform.

    Nothing constrains them: the user's packages live in their own environment
    (/opt/user), apart from the runtime's. Raises PipFailure with pip's reason.
    """
    cache.mkdir(parents=True, exist_ok=True)
    chosen = _resolve(requirements, cache)
    if not chosen:
        raise PipFailure("pip resolved the requirements to nothing", "")
    if any(not f.endswith(".whl") for _, _, f in chosen):
        raise PipFailure(f"pip chose files that are not wheels: {[f for _, _, f in chosen]}",
                         "")
    # One pip at a time writes into a cache: two writing one file corrupt it.
    with file_lock("wheel-cache-" + digest([str(cache.resolve())])):
        _pip(["download", "--no-deps", "--progress-bar", "off", *_target(), "--dest",
              str(cache), "--find-links", str(cache), *(f"{n}=={v}" for n, v, _ in chosen)])
    wheels = [Wheel(name=n, version=v, path=cache / f) for n, v, f in chosen]
    missing = [w.path.name for w in wheels if not w.path.is_file()]
    if missing:
        raise PipFailure(f"pip did not download the wheels it chose: {missing}", "")
    return wheels


def _pip_reason(stdout: str, stderr: str) -> str:
    """The decisive lines of a failed pip run: its ERROR lines (stderr) and the
    "conflict is caused by" block (which pip prints on stdout)."""
    keep: list[str] = []
    lines = stdout.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith("The conflict is caused by"):
            keep.append("the conflict is caused by:")
            for follow in lines[i + 1:]:
                if not follow.startswith(" ") or not follow.strip():
                    break
                keep.append(follow.strip())
            break
    errors: list[str] = []
    for ln in stderr.splitlines():
        s = ln.strip()
        if s.startswith("ERROR:"):
            msg = s.removeprefix("ERROR:").strip()
            if msg.startswith("ResolutionImpossible"):
                continue  # a pointer to pip's docs, not a reason
            m = re.match(r"Could not find a version that satisfies the requirement (\S+) "
                         r"\(from versions: (.*)\)$", msg)
            if m:
                versions = [v.strip() for v in m.group(2).split(",")]
                if versions != ["none"]:
                    shown = ", ".join(versions[-8:])
                    more = "..., " if len(versions) > 8 else ""
                    keep.append(f"available versions of {m.group(1).split('=')[0]}: "
                                f"{more}{shown}")
                continue
            errors.append(msg)
        elif s.startswith(("error:", "×", "╰─>")):
            errors.append(s)
    if any(e.startswith("No matching distribution") for e in errors):
        keep.append(f"only wheels for CPython {PY_VERSION} on {' or '.join(PLATFORMS)} "
                    f"are considered; nothing is built from source")
    reason = [r.rstrip(".") for r in errors + keep]
    if not reason:
        reason = [ln.strip() for ln in stderr.splitlines() if ln.strip()][-5:]
    return "; ".join(dict.fromkeys(reason)).replace(":;", ":")
