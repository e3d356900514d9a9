# Base image of every connector: Debian + Python 3.11 + the sandbox runtime.
#
# Built by `connector build --base` (see worker/images/base.py), which prepares the
# build context:
#   wheels/            the runtime's wheels, downloaded on the host (no network here)
#   requirements.txt   the runtime's pins
#   runtime/worker/    the project's worker/ package (*.py only)
#
# OS_IMAGE is either `connector-os:<hash>` (a debootstrap rootfs, `docker import`ed:
# no registry needed) or `python:3.11-slim` (where a registry is reachable).
ARG OS_IMAGE=python:3.11-slim

FROM ${OS_IMAGE} AS build
COPY wheels /tmp/wheels
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --no-index --find-links /tmp/wheels -r /tmp/requirements.txt \
 && /opt/venv/bin/python -c "import pyarrow, fastavro, pydantic"

FROM ${OS_IMAGE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/runtime \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
COPY --from=build /opt/venv /opt/venv
COPY runtime /opt/runtime
RUN python3 -m compileall -q /opt/runtime \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin sandbox
USER sandbox
WORKDIR /tmp
CMD ["python", "-m", "worker.runtime", "--user-python", "/opt/user/bin/python"]
