"""An allowlist must never open the deployment's own Redis.

Redis holds every tenant's deployments, state and RQ jobs (pickles a worker runs): a
sandbox that reaches it owns every worker. Workers on one host and Redis on another
private address is the multi-host layout (deploy/README.md); with no
CONNECTOR_NETWORK_ALLOW_WITHIN set, any private address may be listed. Here the "Redis"
is a TCP server in a network namespace this test creates, and REDIS_URL points at it.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.helpers.settings_env import settings_env
from tests.integration.docker.test_netallow import Namespace, probe, probe_folder
from worker.models import FailureKind, FragmentFailure
from worker.sandbox.docker import DockerSandbox
from worker.spec import load_connector

pytestmark = pytest.mark.docker

HOST_SIDE = "10.213.19.1"
SERVICE = "10.213.19.10"    # a listed database
REDIS = "10.213.19.11"      # the deployment's Redis, inside the same listed network


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespace]:
    """The other host: a database and the deployment's Redis on one private network."""
    n = Namespace("rt3", HOST_SIDE, (f"{SERVICE}/24", f"{REDIS}/24"), ())
    yield n
    n.close()


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def redis_there(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's REDIS_URL names the namespace's server on 8000."""
    with settings_env(monkeypatch, {"REDIS_URL": f"redis://{REDIS}:8000/0"}):
        yield


def test_a_network_holding_redis_reaches_everything_in_it_but_redis(engine, ns, tmp_path,
                                                                    redis_there):
    before = list(ns.accepted)
    folder = probe_folder(tmp_path, "allow_redis_net", ["10.213.19.0/24:8000"],
                          [(SERVICE, 8000), (REDIS, 8000)])
    info = probe(engine, folder)
    assert info["connect"][f"{SERVICE}:8000"] == "connected", info
    assert info["connect"][f"{REDIS}:8000"] != "connected", info
    assert sorted(set(ns.accepted) - set(before)) == [f"{SERVICE}:8000"]


def test_listing_the_redis_address_is_refused_naming_it(engine, ns, tmp_path, redis_there):
    folder = probe_folder(tmp_path, "allow_redis", [f"{REDIS}:8000"], [])
    conn = load_connector(folder)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(engine).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.USER
    assert f"'{REDIS}:8000'" in str(e.value) and "REDIS_URL" in str(e.value), str(e.value)


def test_an_entry_covering_the_bridge_pool_is_the_tenants_error_not_infra(engine, tmp_path):
    # 172.16.0.0/12 holds the whole default pool (172.31.0.0/16): no session network can
    # be placed apart from it. That is the entry's doing, not the platform's: not retried.
    folder = probe_folder(tmp_path, "allow_pool", ["172.16.0.0/12:5432"], [])
    conn = load_connector(folder)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(engine).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.USER, (e.value.kind, str(e.value))
    assert "'172.16.0.0/12:5432'" in str(e.value) and "CONNECTOR_ALLOW_BRIDGE_POOL" in \
        str(e.value), str(e.value)
