# The connector's pinned packages over the base image. Built with no network: the wheels
# were resolved and downloaded on the host. Only the files pip adds to /opt/venv are
# carried into the final stage, so the wheels themselves never ship.
ARG BASE
FROM ${BASE} AS build
USER root
COPY wheels /tmp/wheels
COPY requirements.txt constraints.txt delta.py /tmp/
RUN python /tmp/delta.py snapshot /opt/venv /tmp/before \
 && pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /tmp/wheels -c /tmp/constraints.txt -r /tmp/requirements.txt \
 && python /tmp/delta.py copy /opt/venv /tmp/before /opt/delta

FROM ${BASE}
COPY --from=build /opt/delta/ /
