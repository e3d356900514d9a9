# The user environment, /opt/user: a venv of the image's Python (not of the runtime's
# /opt/venv, whose packages it never sees) with the default packages, then the
# connector's pinned packages over them, each set installed as resolved (--no-deps).
# Built with no network: the wheels were resolved and downloaded on the host. The
# import check fails the build if a pinned distribution does not import. Only /opt/user
# is carried into the final stage, so the wheels themselves never ship.
ARG BASE
FROM ${BASE} AS build
USER root
COPY defaults /tmp/defaults
COPY pins /tmp/pins
COPY pins.txt importcheck.py /tmp/
RUN "$(/opt/venv/bin/python -c 'import sys; print(sys._base_executable)')" \
        -m venv --without-pip /opt/user \
 && /opt/venv/bin/pip --python /opt/user/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-index --no-deps /tmp/defaults/*.whl \
 && if ls /tmp/pins/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip --python /opt/user/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-index --no-deps /tmp/pins/*.whl; fi \
 && cd /tmp && /opt/user/bin/python -I /tmp/importcheck.py $(cat /tmp/pins.txt)

FROM ${BASE}
COPY --from=build /opt/user /opt/user
