# The orchestrator/worker image: the project over Python 3.11 plus the Docker CLI-less
# SDK (it talks to the engine socket). Not the sandbox image: user code never runs here.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends debootstrap \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker worker
COPY images images
RUN pip install --no-cache-dir . rq-dashboard
ENTRYPOINT []
