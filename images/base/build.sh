#!/usr/bin/env bash
# Build the base image (no registry needed: debootstrap + docker import) and print its tag.
#   images/base/build.sh                 # debootstrap rootfs (default)
#   images/base/build.sh --registry      # FROM python:3.11-slim instead
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 -m worker.images base "$@"
