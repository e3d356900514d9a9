# The orchestrator/worker image: the project over Python 3.11 plus the Docker SDK (it
# talks to the engine socket; no docker CLI). Not the sandbox image: user code never
# runs here. The image builds' Dockerfiles ship inside worker/images/files/.
# debootstrap is only used when the base image is built without a registry, which needs
# a privileged container; deploy/compose.yaml sets CONNECTOR_BASE_FROM_REGISTRY=1.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends debootstrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker worker
RUN pip install --no-cache-dir -e . rq-dashboard
ENTRYPOINT []
