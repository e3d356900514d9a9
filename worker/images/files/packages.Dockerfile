# The user environment, /opt/user: a venv of the image's Python (not of the runtime's
# /opt/venv, whose packages it never sees) with the default packages, then the
# connector's pinned packages over them, each set installed as resolved (--no-deps).
# Built with no network: the wheels were resolved and downloaded on the host (installing
# a wheel runs none of its code). The import check, which does run the packages' code,
# is not a step here: it runs afterwards behind the sandbox's wall
# (worker/images/checkrun.py). Only /opt/user is carried into the final stage, so the
# wheels themselves never ship.
ARG BASE
FROM ${BASE} AS build
USER root
COPY defaults /tmp/defaults
COPY pins /tmp/pins
RUN "$(/opt/venv/bin/python -c 'import sys; print(sys._base_executable)')" \
        -m venv --without-pip /opt/user \
 && /opt/venv/bin/pip --python /opt/user/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-index --no-deps /tmp/defaults/*.whl \
 && if ls /tmp/pins/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip --python /opt/user/bin/python install --no-cache-dir \
        --disable-pip-version-check --no-index --no-deps /tmp/pins/*.whl; fi

FROM ${BASE}
COPY --from=build /opt/user /opt/user
