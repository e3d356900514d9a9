"""Where image builds keep what outlives one build: rootfs tarballs, wheels, lock files.

The root is the `build_cache` setting (`CONNECTOR_BUILD_CACHE`, by default
`~/.cache/connector/build`, outside the source checkout); workers on one host may share
it.
"""

from __future__ import annotations

from pathlib import Path

from worker.settings import settings


def cache_dir() -> Path:
    return settings().build_cache


def wheel_cache_dir() -> Path:
    return cache_dir() / "wheels"


def rootfs_dir() -> Path:
    return cache_dir() / "rootfs"


def lock_dir() -> Path:
    return cache_dir() / "locks"
