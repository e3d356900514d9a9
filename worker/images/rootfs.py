"""`connector-os:<hash>`: a Debian rootfs made by debootstrap and `docker import`ed, so the
base image needs no registry.

The rootfs tarball is kept in the build cache, keyed by debootstrap's inputs, so
re-creating the image after an image prune skips debootstrap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from worker.images.cache import rootfs_dir
from worker.images.errors import ImageBuildError
from worker.images.once import build_once
from worker.images.tags import LABEL_KIND, digest
from worker.settings import settings

if TYPE_CHECKING:
    import docker

DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_VARIANT = "minbase"
DEBOOTSTRAP_INCLUDE = ("python3", "python3-venv")


def debian_mirror() -> str:
    return settings().debian_mirror


def os_tag() -> str:
    key = digest(["debootstrap", DEBIAN_SUITE, DEBOOTSTRAP_VARIANT,
                  ",".join(DEBOOTSTRAP_INCLUDE), debian_mirror(), "amd64"])
    return f"connector-os:{key}"


def os_image(client: docker.DockerClient) -> str:
    """The OS image's tag, after creating it if it is missing."""
    tag = os_tag()
    key = tag.split(":", 1)[1]

    def build() -> None:
        tarball = rootfs_dir() / f"{DEBIAN_SUITE}-{DEBOOTSTRAP_VARIANT}-{key}.tar"
        if not tarball.is_file():
            _debootstrap_tarball(tarball)
        client.api.import_image_from_file(
            str(tarball), repository="connector-os", tag=key,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]', f"LABEL {LABEL_KIND}=os"],
        )

    return build_once(client, tag, build)


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
