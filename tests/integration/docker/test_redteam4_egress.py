"""Egress never reaches the deployment's Redis, even on a public address.

Redis holds every tenant's deployments, state and RQ jobs (a job names the function a
worker runs): a sandbox that reaches it owns every worker. The egress fence drops
private ranges, so a Redis on a private address was already out of reach; one on a public
address (another machine of the deployment, a managed Redis) was not. Here "Redis" is a
TCP server in a network namespace this test creates, at a documentation address routed
to it, and REDIS_URL names it; nothing leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests.helpers.settings_env import settings_env
from tests.integration.docker.test_egress import REACH_CODE
from tests.integration.docker.test_hostile import attack_connector
from tests.integration.docker.test_netallow import Namespace
from worker.sandbox import egress
from worker.sandbox.docker import DockerSandbox
from worker.spec import load_connector

pytestmark = pytest.mark.docker

REDIS_PUBLIC = "198.51.100.29"  # documentation addresses, routed to the namespace
OTHER_PUBLIC = "198.51.100.30"
HOST_SIDE = "10.213.29.1"


@pytest.fixture(scope="module")
def redis_ns() -> Iterator[Namespace]:
    n = Namespace("rt4", HOST_SIDE, ("10.213.29.10/24", f"{REDIS_PUBLIC}/32",
                                     f"{OTHER_PUBLIC}/32"), (REDIS_PUBLIC, OTHER_PUBLIC))
    yield n
    n.close()


@pytest.fixture
def public_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's REDIS_URL names the namespace's server on 8000, a public address."""
    with settings_env(monkeypatch, {"REDIS_URL": f"redis://{REDIS_PUBLIC}:8000/0"}):
        yield
    # the rule this test's Redis address added to the shared egress chain
    subprocess.run(["iptables", "-w", "5", "-D", egress.CHAIN, "-i", egress.BRIDGE, "-d",
                    f"{REDIS_PUBLIC}/32", "-j", "DROP"], capture_output=True)


def test_egress_reaches_public_addresses_but_never_the_deployments_redis(
        redis_ns, tmp_path, public_redis) -> None:
    before = list(redis_ns.accepted)
    targets = [(OTHER_PUBLIC, 8000), (REDIS_PUBLIC, 8000), (REDIS_PUBLIC, 8001)]
    folder = attack_connector(tmp_path / "egress_redis", REACH_CODE, "egress_redis",
                              {"targets": targets},
                              "parser: {format: json}\nlimits: {network: egress, "
                              "timeout: 60}\n")
    conn = load_connector(folder)
    session = DockerSandbox(docker.from_env()).open(conn, conn.read_credentials())
    try:
        [fragment] = list(session.list())
        batches = list(session.read(fragment))
    finally:
        session.close()
    info = json.loads(batches[0].column("result").to_pylist()[0])
    # a public address is egress's point...
    assert info["connect"][f"{OTHER_PUBLIC}:8000"] == "connected", info
    # ...but REDIS_URL's host never is: it holds every tenant's state and the jobs
    # workers run
    assert info["connect"][f"{REDIS_PUBLIC}:8000"] != "connected", info
    assert info["connect"][f"{REDIS_PUBLIC}:8001"] != "connected", info
    assert sorted(set(redis_ns.accepted) - set(before)) == [f"{OTHER_PUBLIC}:8000"]
