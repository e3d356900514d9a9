"""Content-addressed images: base (OS + Python + runtime), connector packages, connector code.

    connector-os:<h>                 debootstrap rootfs, `docker import`ed (no registry)
      connector-base:<h>             + /opt/venv (pyarrow, fastavro, pydantic) + worker/
        connector-pkgs:<h>           + the connector's pinned packages (shared by code changes)
          connector-<tenant>-<name>:<h>   + /opt/connector (the connector folder, root-owned)

Every tag is a hash of its inputs, so the same inputs give the same tag and an existing
tag is never rebuilt. Packages are resolved to wheels on the HOST (`pip download` for the
image's interpreter and platform) into a shared wheel cache, copied into the build
context and installed with `--no-index`: builds run with `network_mode="none"`.
Concurrent builds of one tag serialize on a file lock under the cache directory.

Host only: the sandbox runtime never imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import ConnectorError
from worker.settings import settings
from worker.spec import Connector, load_connector

if TYPE_CHECKING:
    import docker

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_DIR = Path(__file__).resolve().parent
BASE_DIR = REPO_ROOT / "images" / "base"

# The interpreter and platform of the image (Debian bookworm's python3 is 3.11, glibc 2.36).
PY_VERSION = "3.11"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
IMPLEMENTATION = "cp"
ABI = "cp311"

DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_VARIANT = "minbase"
DEBOOTSTRAP_INCLUDE = ("python3", "python3-venv")
REGISTRY_OS_IMAGE = "python:3.11-slim"

SANDBOX_USER = "sandbox"
SANDBOX_UID = 10001

LABEL_CONSTRAINTS = "io.connector.runtime-constraints"
LABEL_KIND = "io.connector.kind"

_HASH_LEN = 16


class ImageBuildError(ConnectorError):
    """An image could not be built; the message says which input and why."""


def cache_dir() -> Path:
    """Root of the build caches (rootfs tarballs, wheels, locks): CONNECTOR_BUILD_CACHE."""
    return settings().build_cache


def default_wheel_cache() -> Path:
    return cache_dir() / "wheels"


def debian_mirror() -> str:
    return settings().debian_mirror


# --------------------------------------------------------------------------- helpers


def _sha(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:_HASH_LEN]


@contextlib.contextmanager
def _tag_lock(tag: str) -> Iterator[None]:
    """An exclusive lock per image tag, across processes (fcntl.flock)."""
    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    path = d / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".lock")
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _source_files(root: Path) -> list[Path]:
    """Files of a folder, sorted, without caches and bytecode."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if any(part in ("__pycache__", ".git", ".pytest_cache", ".ruff_cache") for part in rel):
            continue
        if p.is_file() and p.suffix not in (".pyc", ".pyo"):
            out.append(p)
    return out


def _tree_hash_parts(root: Path, files: Sequence[Path]) -> Iterator[str | bytes]:
    for f in files:
        yield f.relative_to(root).as_posix()
        yield f.read_bytes()


def _copy_tree(src: Path, dst: Path, files: Sequence[Path]) -> None:
    """Copy files with normalized modes (dirs 755, files 644 or 755): read-only to others."""
    dst.mkdir(parents=True, exist_ok=True)
    os.chmod(dst, 0o755)
    for f in files:
        target = dst / f.relative_to(src)
        for parent in reversed(target.relative_to(dst).parents):
            d = dst / parent
            if not d.exists():
                d.mkdir()
                os.chmod(d, 0o755)
        shutil.copyfile(f, target)
        os.chmod(target, 0o755 if os.access(f, os.X_OK) else 0o644)


def _docker_build(client: docker.DockerClient, context: Path, tag: str, what: str,
                  buildargs: dict[str, str] | None = None,
                  labels: dict[str, str] | None = None) -> str:
    import docker.errors

    try:
        image, _logs = client.images.build(
            path=str(context), tag=tag, rm=True, forcerm=True, pull=False,
            network_mode="none", buildargs=buildargs or {}, labels=labels or {},
        )
    except docker.errors.BuildError as e:
        tail = []
        for chunk in e.build_log:
            if "stream" in chunk:
                tail.extend(chunk["stream"].rstrip("\n").splitlines())
            elif "error" in chunk:
                tail.append(chunk["error"])
        raise ImageBuildError(f"{what}: docker build of {tag} failed: {e.msg}\n"
                              + "\n".join(tail[-20:])) from None
    except docker.errors.APIError as e:
        raise ImageBuildError(f"{what}: docker build of {tag} failed: {e}") from None
    return str(image.id)


# --------------------------------------------------------------------------- wheels


class PipFailure(ConnectorError):
    """`pip download` failed; `reason` is the relevant part of its output."""

    def __init__(self, reason: str, stderr: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr


def _pip_reason(stdout: str, stderr: str) -> str:
    """The decisive lines of a failed `pip download`: its ERROR lines (stderr) and the
    "conflict is caused by" block (which pip prints on stdout)."""
    keep: list[str] = []
    lines = stdout.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith("The conflict is caused by"):
            keep.append("the conflict is caused by:")
            for follow in lines[i + 1:]:
                if not follow.startswith(" ") or not follow.strip():
                    break
                keep.append(follow.strip().replace("The user requested (constraint)",
                                                   "the runtime in the base image requires"))
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


def _wheel_filenames(stdout: str) -> list[str]:
    """Wheel files of a `pip download` run, in the order pip reports them."""
    names: list[str] = []
    for ln in stdout.splitlines():
        m = re.search(r"(?:Saved|File was already downloaded)\s+(\S+\.whl)\s*$", ln.strip())
        if m:
            names.append(Path(m.group(1)).name)
    return list(dict.fromkeys(names))


def _dist_pin(wheel: str) -> str:
    """'pydantic_core-2.46.4-cp311-...whl' -> 'pydantic-core==2.46.4'."""
    name, version = wheel.split("-")[:2]
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def pip_download(requirements: Sequence[str], dest: Path,
                 constraints: Sequence[str] = ()) -> list[Path]:
    """Resolve `requirements` to wheels for the image's Python/platform; return their paths.

    Only wheels (`--only-binary=:all:`): nothing is ever built on the host or in the
    image. `constraints` (name==version lines) keep the resolution compatible with the
    runtime already in the base image. Raises PipFailure with pip's reason.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
        "--only-binary=:all:", "--python-version", PY_VERSION,
        *[a for p in PLATFORMS for a in ("--platform", p)],
        "--implementation", IMPLEMENTATION, "--abi", ABI,
        "--dest", str(dest), "--find-links", str(dest), "--progress-bar", "off",
    ]
    with tempfile.TemporaryDirectory() as td:
        if constraints:
            cfile = Path(td) / "constraints.txt"
            cfile.write_text("\n".join(constraints) + "\n")
            cmd += ["-c", str(cfile)]
        # A lock on the shared wheel cache: two pips writing one file corrupt it.
        with _tag_lock("wheel-cache-" + _sha([str(dest.resolve())])):
            r = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if r.returncode != 0:
        raise PipFailure(_pip_reason(r.stdout, r.stderr), r.stderr)
    files = [dest / n for n in _wheel_filenames(r.stdout)]
    missing = [f.name for f in files if not f.is_file()]
    if not files or missing:
        raise PipFailure(f"pip reported no usable wheels (missing: {missing})", r.stdout)
    return files


# --------------------------------------------------------------------------- base image


def _read_base_pins() -> list[str]:
    lines = (BASE_DIR / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def _debootstrap_key() -> str:
    return _sha(["debootstrap", DEBIAN_SUITE, DEBOOTSTRAP_VARIANT, ",".join(DEBOOTSTRAP_INCLUDE),
                 debian_mirror(), "amd64"])


def os_image(client: docker.DockerClient) -> str:
    """`connector-os:<hash>`: a Debian rootfs from debootstrap, imported without a registry.

    The rootfs tarball is cached under the cache dir, keyed by debootstrap's inputs, so
    rebuilding after an image prune skips debootstrap.
    """
    key = _debootstrap_key()
    tag = f"connector-os:{key}"
    if _image_exists(client, tag):
        return tag
    with _tag_lock(tag):
        if _image_exists(client, tag):
            return tag
        tarball = cache_dir() / "rootfs" / f"{DEBIAN_SUITE}-{DEBOOTSTRAP_VARIANT}-{key}.tar"
        if not tarball.is_file():
            _debootstrap_tarball(tarball)
        client.api.import_image_from_file(
            str(tarball), repository="connector-os", tag=key,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'],
        )
        if not _image_exists(client, tag):
            raise ImageBuildError(f"docker import of {tarball} did not produce {tag}")
    return tag


def _debootstrap_tarball(tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
    os.chmod(root, 0o755)  # mkdtemp's 0700 would become the image's "/" and lock out users
    try:
        cmd = ["debootstrap", f"--variant={DEBOOTSTRAP_VARIANT}",
               f"--include={','.join(DEBOOTSTRAP_INCLUDE)}", DEBIAN_SUITE, str(root),
               debian_mirror()]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-2000:] if log.is_file() else r.stderr[-2000:]
            raise ImageBuildError(f"debootstrap failed ({' '.join(cmd)}):\n{detail}")
        # Nothing the image needs: downloaded .debs and package lists.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        tmp = tarball.with_suffix(".tar.tmp")
        r = subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root),
                            "-cf", str(tmp), "."], capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageBuildError(f"tar of the rootfs failed: {r.stderr[-2000:]}")
        os.replace(tmp, tarball)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# What the sandbox runtime imports: only these go into (and hash into) the base image,
# so host-only modules (CLI, images, queue) can change without rebuilding every image.
RUNTIME_MODULES = ("__init__.py", "errors.py", "protocol.py", "spec.py", "runtime/")


def _worker_files() -> list[Path]:
    return [f for f in _source_files(WORKER_DIR) if f.suffix == ".py" and
            str(f.relative_to(WORKER_DIR)).startswith(RUNTIME_MODULES)]


def base_tag(os_source: str) -> str:
    """The base tag for an OS image source: covers Dockerfile, pins and worker/ sources."""
    parts: list[str | bytes] = ["base", os_source, (BASE_DIR / "Dockerfile").read_bytes(),
                                "\n".join(_read_base_pins()), PY_VERSION, *PLATFORMS, ABI]
    parts.extend(_tree_hash_parts(WORKER_DIR, _worker_files()))
    return f"connector-base:{_sha(parts)}"


def base_image(client: docker.DockerClient, *, registry: bool | None = None,
               wheel_cache: Path | None = None) -> str:
    """Ensure the base image exists (build it if missing) and return its tag.

    registry=True starts FROM python:3.11-slim (needs a reachable registry); the default
    (also env CONNECTOR_BASE_FROM_REGISTRY=1) builds the OS layer with debootstrap.
    """
    if registry is None:
        registry = settings().base_from_registry
    os_source = REGISTRY_OS_IMAGE if registry else f"connector-os:{_debootstrap_key()}"
    tag = base_tag(os_source)
    if _image_exists(client, tag):
        return tag
    with _tag_lock(tag):
        if _image_exists(client, tag):
            return tag
        os_tag = REGISTRY_OS_IMAGE if registry else os_image(client)
        if registry and not _image_exists(client, os_tag):
            client.images.pull(os_tag)
        pins = _read_base_pins()
        try:
            wheels = pip_download(pins, wheel_cache or default_wheel_cache())
        except PipFailure as e:
            raise ImageBuildError(f"base image: runtime packages {pins} could not be "
                                  f"resolved: {e.reason}") from None
        constraints = [_dist_pin(w.name) for w in wheels]
        with tempfile.TemporaryDirectory(prefix="base-ctx-") as td:
            ctx = Path(td)
            shutil.copyfile(BASE_DIR / "Dockerfile", ctx / "Dockerfile")
            (ctx / "requirements.txt").write_text("\n".join(pins) + "\n")
            (ctx / "wheels").mkdir()
            for w in wheels:
                _link_or_copy(w, ctx / "wheels" / w.name)
            _copy_tree(WORKER_DIR, ctx / "runtime" / "worker", _worker_files())
            _docker_build(client, ctx, tag, "base image", buildargs={"OS_IMAGE": os_tag},
                          labels={LABEL_KIND: "base",
                                  LABEL_CONSTRAINTS: "\n".join(sorted(constraints))})
    return tag


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# --------------------------------------------------------------------------- connector images

_PKGS_DOCKERFILE = """\
# The connector's pinned packages over the base image. Built with no network: the wheels
# were resolved and downloaded on the host. Only the files pip adds to /opt/venv are
# carried into the final stage, so the wheels themselves never ship.
ARG BASE
FROM ${BASE} AS build
USER root
COPY wheels /tmp/wheels
COPY requirements.txt constraints.txt delta.py /tmp/
RUN python /tmp/delta.py snapshot /opt/venv /tmp/before \\
 && pip install --no-cache-dir --disable-pip-version-check --no-index \\
        --find-links /tmp/wheels -c /tmp/constraints.txt -r /tmp/requirements.txt \\
 && python /tmp/delta.py copy /opt/venv /tmp/before /opt/delta

FROM ${BASE}
COPY --from=build /opt/delta/ /
"""

# Runs inside the build stage: list the files of a tree; later copy the new/changed ones.
_DELTA_PY = """\
import os, shutil, sys

def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out

if sys.argv[1] == "snapshot":
    with open(sys.argv[3], "w") as f:
        for p, (size, mtime) in walk(sys.argv[2]).items():
            f.write(f"{size} {mtime} {p}\\n")
else:
    root, before_file, dest = sys.argv[2:5]
    before = {}
    with open(before_file) as f:
        for line in f:
            size, mtime, p = line.rstrip("\\n").split(" ", 2)
            before[p] = (int(size), int(mtime))
    os.makedirs(dest, exist_ok=True)
    n = 0
    for p, meta in walk(root).items():
        if before.get(p) == meta:
            continue
        target = dest + p
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(p):
            os.symlink(os.readlink(p), target)
        else:
            shutil.copy2(p, target)
        n += 1
    print(f"delta: {n} new or changed files under {root}")
"""

_CODE_DOCKERFILE = """\
# The connector's code, root-owned and read-only to the sandbox user.
ARG PKGS
FROM ${PKGS}
COPY connector /opt/connector
WORKDIR /opt/connector
"""


def _normalize_pins(pins: Iterable[str]) -> list[str]:
    return sorted({re.sub(r"\s+", "", p) for p in pins})


def image_repo(connector: Connector) -> str:
    return f"connector-{connector.spec.tenant}-{connector.spec.name}"


def _connector_files(connector: Connector) -> list[Path]:
    """The folder as it goes into the code layer, minus the credentials file: secrets
    reach the sandbox over stdin at session start, never through an image."""
    creds = connector.spec.credentials
    secret = (connector.path / creds.file).resolve() if creds and creds.file else None
    return [f for f in _source_files(connector.path) if f.resolve() != secret]


def packages_tag(base_id: str, pins: Sequence[str]) -> str:
    return f"connector-pkgs:{_sha(['pkgs', base_id, *_normalize_pins(pins)])}"


def connector_tag(base_id: str, connector: Connector) -> str:
    """hash(base image id, sorted pins, code): the code covers connector.code_hash and
    every other file of the folder (helper modules, data files), since all are copied."""
    parts: list[str | bytes] = ["connector", base_id, *_normalize_pins(connector.spec.packages),
                                "--code--", connector.code_hash]
    parts.extend(_tree_hash_parts(connector.path, _connector_files(connector)))
    return f"{image_repo(connector)}:{_sha(parts)}"


def _resolve_error(connector: Connector, pins: Sequence[str], e: PipFailure) -> ImageBuildError:
    def mentioned(pin: str) -> bool:
        name = re.split(r"[\[<>=!~\s]", pin, maxsplit=1)[0]
        pattern = re.sub(r"[-_.]+", "[-_.]", re.escape(name).replace(r"\-", "-"))
        return re.search(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", e.reason, re.I) is not None

    named = [p for p in pins if mentioned(p)] or list(pins)
    what = (f"package {named[0]!r}" if len(named) == 1
            else "packages " + ", ".join(repr(p) for p in named))
    return ImageBuildError(f"connector {connector.spec.name!r}: {what} could not be resolved: "
                           f"{e.reason}")


def packages_image(client: docker.DockerClient, connector: Connector, base: str,
                   wheel_cache: Path) -> str:
    """`connector-pkgs:<hash(base id, sorted pins)>`, or the base itself when there are none."""
    base_img = client.images.get(base)
    pins = _normalize_pins(connector.spec.packages)
    if not pins:
        return base
    tag = packages_tag(str(base_img.id), pins)
    if _image_exists(client, tag):
        return tag
    with _tag_lock(tag):
        if _image_exists(client, tag):
            return tag
        constraints = [c for c in (base_img.labels or {}).get(LABEL_CONSTRAINTS, "").split("\n")
                       if c]
        try:
            wheels = pip_download(pins, wheel_cache, constraints=constraints)
        except PipFailure as e:
            raise _resolve_error(connector, pins, e) from None
        with tempfile.TemporaryDirectory(prefix="pkgs-ctx-") as td:
            ctx = Path(td)
            (ctx / "Dockerfile").write_text(_PKGS_DOCKERFILE)
            (ctx / "delta.py").write_text(_DELTA_PY)
            (ctx / "requirements.txt").write_text("\n".join(pins) + "\n")
            (ctx / "constraints.txt").write_text("\n".join(constraints) + "\n")
            (ctx / "wheels").mkdir()
            for w in wheels:
                _link_or_copy(w, ctx / "wheels" / w.name)
            _docker_build(client, ctx, tag, f"connector {connector.spec.name!r}: packages",
                          buildargs={"BASE": base},
                          labels={LABEL_KIND: "packages", "io.connector.pins": json.dumps(pins)})
    return tag


def build_connector_image(client: docker.DockerClient, connector: Connector,
                          wheel_cache: Path | None = None) -> str:
    """Build (or find) the connector's image and return its tag.

    Layers: base -> packages (its own tag, reused across code changes) -> code. Same
    inputs give the same tag and no rebuild. A pin that cannot be resolved raises
    ImageBuildError naming the pin and pip's reason; existing images are left as they are.
    """
    wheel_cache = wheel_cache or default_wheel_cache()
    base = base_image(client, wheel_cache=wheel_cache)
    base_id = str(client.images.get(base).id)
    tag = connector_tag(base_id, connector)
    if _image_exists(client, tag):
        return tag
    with _tag_lock(tag):
        if _image_exists(client, tag):
            return tag
        pkgs = packages_image(client, connector, base, wheel_cache)
        with tempfile.TemporaryDirectory(prefix="code-ctx-") as td:
            ctx = Path(td)
            (ctx / "Dockerfile").write_text(_CODE_DOCKERFILE)
            _copy_tree(connector.path, ctx / "connector", _connector_files(connector))
            _docker_build(client, ctx, tag, f"connector {connector.spec.name!r}: code",
                          buildargs={"PKGS": pkgs},
                          labels={LABEL_KIND: "connector",
                                  "io.connector.tenant": connector.spec.tenant,
                                  "io.connector.name": connector.spec.name,
                                  "io.connector.packages-image": pkgs})
    return tag


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    import docker


    ap = argparse.ArgumentParser(prog="python3 -m worker.images",
                                 description="Build content-addressed connector images.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base", help="build the base image and print its tag")
    b.add_argument("--registry", action="store_true",
                   help=f"start FROM {REGISTRY_OS_IMAGE} instead of a debootstrap rootfs")
    c = sub.add_parser("connector", help="build a connector's image and print its tag")
    c.add_argument("path", help="the connector folder")
    c.add_argument("--wheel-cache", type=Path, default=None)
    args = ap.parse_args(argv)

    client = docker.from_env()
    try:
        if args.cmd == "base":
            print(base_image(client, registry=args.registry or None))
        else:
            print(build_connector_image(client, load_connector(args.path), args.wheel_cache))
    except ConnectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
