# The project's commands. `make demo` and `make test` work on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
REDIS_PORT ?= 6390
export REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)/0

.PHONY: install demo test test-fast lint system services redis dockerd base-image worker bench clean

$(BIN)/connector: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/connector

demo: install
	@rm -rf data/default/blobs
	$(BIN)/connector validate examples/blobs
	$(BIN)/connector refresh examples/blobs --sandbox process
	$(BIN)/connector show examples/blobs
	$(BIN)/connector refresh examples/blobs --sandbox process --json

# The whole suite against real services: installs and starts what it needs first.
test: install services base-image
	$(BIN)/pytest -q -rs

# Unit tests only: no Redis, no Docker, in-process (under a minute).
test-fast: install
	$(BIN)/pytest -q tests/unit -m "not redis and not docker"

lint: install
	$(BIN)/ruff check .

system:
	scripts/install-system.sh

redis: system
	scripts/start-redis.sh $(REDIS_PORT)

dockerd: system
	scripts/start-dockerd.sh

services: redis dockerd

base-image: install dockerd
	$(BIN)/connector build --base

worker: install
	$(BIN)/connector worker --concurrency $${CONCURRENCY:-2}

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) data .cache
