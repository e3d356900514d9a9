"""Requirements resolved to wheels for the image's interpreter, on the host.

Two pip runs: `pip install --dry-run --ignore-installed --report` resolves the
requirements for the image's Python and platform (not the host's, and ignoring what the
host has installed) and says, as JSON, which distribution and file it chose for each,
with the file's sha256 from the index; `pip download --no-deps --require-hashes` then
fetches exactly those files. Only wheels are considered (`--only-binary=:all:`): nothing
is ever built from source, on the host or in the image. pip reports a failed resolution
only as text, so the reason shown to the user is picked out of pip's output.

The wheel cache is shared by every build on the host, so every tenant's, and is never a
candidate of a resolution (no `--find-links` to it): a release cached for one tenant,
since yanked or never on the index another tenant's build reads, is offered to nobody.
The cache is addressed by content, `sha256/<hex>/<file>`: a resolution takes a cached
file only under the hash the index gave for the file it chose, and only after checking
the file's bytes still hash to it; anything else is downloaded into a directory of its
own, checked, then moved in.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ValidationError

from worker.errors import ConnectorError

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


class _ArchiveInfo(BaseModel):
    hashes: dict[str, str] = {}


class _DownloadInfo(BaseModel):
    url: str
    archive_info: _ArchiveInfo | None = None


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
    # In an empty directory of its own: pip reads a requirement that looks like a file
    # name (`x.tar.gz`, `x.whl`) as a path relative to where it runs, and builds a source
    # archive found there (its setup.py runs here, --only-binary notwithstanding); the
    # caller's directory may be a tenant's connector folder.
    with tempfile.TemporaryDirectory(prefix="connector-pip-") as empty:
        r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                           text=True, cwd=empty)
    if r.returncode != 0:
        raise PipFailure(_pip_reason(r.stdout, r.stderr), r.stderr)
    return r


class _Chosen(NamedTuple):
    """A file the resolver chose: its distribution, version, file name and sha256 (when
    the index gave one)."""

    name: str
    version: str
    file: str
    sha256: str | None


def _resolve(requirements: Sequence[str]) -> list[_Chosen]:
    """What pip would install for `requirements`, from the index alone."""
    with tempfile.TemporaryDirectory() as td:
        report = Path(td) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
              *_target(), *requirements])
        try:
            parsed = _Report.model_validate_json(report.read_text())
        except (OSError, ValidationError) as e:
            raise PipFailure(f"pip's installation report could not be read: {e}", "") from None
    out = []
    for i in parsed.install:
        info = i.download_info
        sha = (info.archive_info.hashes.get("sha256") if info.archive_info else None)
        out.append(_Chosen(canonical_name(i.metadata.name), i.metadata.version,
                           unquote(Path(urlparse(info.url).path).name),
                           sha.lower() if sha and _HEX64.fullmatch(sha.lower()) else None))
    return out


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _cached(cache: Path, sha: str, file: str) -> Path:
    return cache / "sha256" / sha / file


def _download(chosen: list[_Chosen], cache: Path) -> dict[_Chosen, Path]:
    """Fetch `chosen` into a directory of this call's own, check each file's hash (the
    index's, where it gave one) and move it into the cache under its content's hash."""
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[_Chosen, Path] = {}
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as td:
        dest = Path(td) / "wheels"
        hashed = [c for c in chosen if c.sha256]
        plain = [c for c in chosen if not c.sha256]
        if hashed:
            reqs = Path(td) / "requirements.txt"
            reqs.write_text("".join(f"{c.name}=={c.version} --hash=sha256:{c.sha256}\n"
                                    for c in hashed))
            _pip(["download", "--no-deps", "--progress-bar", "off", *_target(),
                  "--require-hashes", "--dest", str(dest), "-r", str(reqs)])
        if plain:
            _pip(["download", "--no-deps", "--progress-bar", "off", *_target(),
                  "--dest", str(dest), *(f"{c.name}=={c.version}" for c in plain)])
        for c in chosen:
            got = dest / c.file
            if not got.is_file():
                raise PipFailure(f"pip did not download the wheel it chose: {c.file}", "")
            sha = _sha256(got)
            if c.sha256 and sha != c.sha256:
                raise PipFailure(f"{c.file} does not have the sha256 the index gave "
                                 f"({sha}, not {c.sha256})", "")
            final = _cached(cache, sha, c.file)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got, final)  # atomic: a concurrent build sees the whole file or none
            out[c] = final
    return out


def resolve(requirements: Sequence[str]) -> list[str]:
    """`name==version` of each distribution `requirements` resolve to for the image's
    Python and platform, from the index alone, downloading nothing. Raises PipFailure."""
    return [f"{c.name}=={c.version}" for c in _resolve(requirements)]


def wheels_for(requirements: Sequence[str], cache: Path) -> list[Wheel]:
    """Resolve `requirements` to wheels for the image's Python and platform, kept in
    `cache` by content hash.

    Nothing constrains them: the user's packages live in their own environment
    (/opt/user), apart from the runtime's. Raises PipFailure with pip's reason.
    """
    cache = cache.resolve()  # pip runs in a directory of its own (see _pip)
    chosen = _resolve(requirements)
    if not chosen:
        raise PipFailure("pip resolved the requirements to nothing", "")
    if any(not c.file.endswith(".whl") for c in chosen):
        raise PipFailure(f"pip chose files that are not wheels: {[c.file for c in chosen]}",
                         "")
    paths: dict[_Chosen, Path] = {}
    for c in chosen:
        path = _cached(cache, c.sha256, c.file) if c.sha256 else None
        # Checked on every use: the cache is a directory on the host, shared by every
        # build; a file changed in it is fetched again rather than installed.
        if path is not None and path.is_file() and _sha256(path) == c.sha256:
            paths[c] = path
    missing = [c for c in chosen if c not in paths]
    if missing:
        paths.update(_download(missing, cache))
    return [Wheel(name=c.name, version=c.version, path=paths[c]) for c in chosen]


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
