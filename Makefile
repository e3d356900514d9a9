# The project's commands. `make demo` and `make test` work on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
REDIS_PORT ?= 6390
export REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)/0

.PHONY: install demo test test-fast lint system services redis dockerd base-image worker bench bench-peers clean

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
	$(BIN)/pytest -q -n auto tests/unit -m "not redis and not docker"

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

# The peers' scripts stay in shared/peers (a sibling of the clone); each peer gets its
# own venv under the gitignored $(PEER_VENVS), pinned to the versions its README used.
PEERS_DIR  ?= $(CURDIR)/../shared/peers
PEER_VENVS ?= $(CURDIR)/.peer-venvs
PEER_PKGS_baseline := pyarrow==26.0.1
PEER_PKGS_dlt      := dlt[filesystem,parquet]==1.31.0
PEER_PKGS_singer   := singer-sdk==0.54.9
PEER_PKGS_airbyte  := airbyte-cdk==7.39.1
PEER_NAMES := baseline dlt singer airbyte

$(PEER_VENVS)/%/.installed:
	$(PY) -m venv $(PEER_VENVS)/$*
	$(PEER_VENVS)/$*/bin/pip install -q '$(PEER_PKGS_$*)'
	@touch $@

bench-peers: install $(foreach v,$(PEER_NAMES),$(PEER_VENVS)/$(v)/.installed)
	PEERS_DIR=$(PEERS_DIR) PEER_VENVS=$(PEER_VENVS) $(BIN)/python bench/peers.py $(BENCH_PEERS_ARGS)

clean:
	rm -rf $(VENV) data .cache .peer-venvs
