"""Content-addressed images: base (OS + Python + runtime), connector packages, connector code.

    connector-os:<h>                 debootstrap rootfs, `docker import`ed (rootfs.py)
      connector-base:<h>             + /opt/venv (pyarrow, fastavro, pydantic) + the
                                       sandbox runtime (base.py, runtime.py)
        connector-pkgs:<h>           + the connector's pinned packages (connector.py)
          <repository>:<h>           + /opt/connector, the connector folder (connector.py)

Every tag is a hash of its inputs (tags.py), so the same inputs give the same tag and an
existing tag is never rebuilt; concurrent builds of one tag build it once (once.py), and
a tag about to be used is leased so no prune takes it meanwhile (lease.py). The store
(store.py) keeps the host's images within bounds.
Packages are resolved to wheels on the HOST for the image's interpreter and platform
(pip.py) into a shared wheel cache (cache.py), copied into the build context and
installed with `--no-index`: builds run with `network_mode="none"` (context.py). The
Dockerfiles are package data, in files/.

Host only: the sandbox runtime never imports this package.
"""

from worker.images.base import base_image, base_tag
from worker.images.connector import (
    build_connector_image,
    connector_tag,
    image_repo,
    packages_image,
    packages_tag,
)
from worker.images.errors import ImageBuildError

__all__ = ["ImageBuildError", "base_image", "base_tag", "build_connector_image",
           "connector_tag", "image_repo", "packages_image", "packages_tag"]
