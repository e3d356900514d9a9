"""A warm session's network fence is checked at every fragment boundary: if its rules
are gone (an operator flushed DOCKER-USER, a firewall reload, a crash), the session is
stopped and the fragment fails as `infra` naming the fence, instead of running on
unfenced until the session ends.

The allowlist case damages only the rules of the session the test opened; the egress
case runs on an egress network and chains of the test's own (the module's names
patched), so no other session on this host loses its fence.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import write_connector
from worker import naming
from worker.models import FailureKind, FragmentFailure
from worker.sandbox import egress, firewall, netallow
from worker.sandbox.docker import DockerSandbox
from worker.spec import load_connector

pytestmark = pytest.mark.docker

CODE = '''
def list_objects(context, metadata):
    for name in ("a", "b", "c"):
        yield {"name": name, "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "x\\n1\\n"
'''


def iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True)


def chains(prefix: str) -> set[str]:
    return {line.split()[1] for line in iptables("-S").stdout.splitlines()
            if line.startswith(f"-N {prefix}")}


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


def _connector(tmp_path: Path, name: str, network: str):
    return load_connector(write_connector(tmp_path / name, CODE,
                                          f"name: {name}\nlimits:\n  network: {network}\n"))


def _containers(client: docker.DockerClient, name: str) -> list:
    return client.containers.list(all=True, filters={
        "label": f"{naming.LABEL_NAME}={name}"})


def _reads_until_the_fence_is_damaged(client, conn, damage) -> FragmentFailure:
    session = DockerSandbox(client).open(conn, None)
    try:
        a, b, c = session.list()
        assert list(session.read(a))  # fenced: reads
        damage()
        with pytest.raises(FragmentFailure) as e:
            list(session.read(b))
        assert not session.usable
        assert _containers(client, conn.spec.name) == []  # stopped, not left running
        return e.value
    finally:
        session.close()


@pytest.mark.parametrize("damage", ["jump", "chain"])
def test_an_allowlist_session_stops_when_its_fence_is_gone(client, tmp_path, damage):
    name = f"fence-allow-{damage}"
    conn = _connector(tmp_path, name, '{allow: ["10.213.9.10:8000"]}')
    before = chains(netallow.CHAIN_PREFIX)
    seen: list[str] = []

    def remove() -> None:
        [chain] = chains(netallow.CHAIN_PREFIX) - before
        seen.append(chain)
        bridge = netallow.BRIDGE_PREFIX + chain.removeprefix(netallow.CHAIN_PREFIX)
        if damage == "jump":  # what flushing DOCKER-USER does to this session
            assert iptables("-D", "DOCKER-USER", "-i", bridge, "-j", chain).returncode == 0
        else:
            assert iptables("-F", chain).returncode == 0

    failure = _reads_until_the_fence_is_damaged(client, conn, remove)
    assert failure.kind == FailureKind.INFRA
    assert "allowlist fence" in failure.message and seen[0] in failure.message, failure
    assert seen[0] not in chains(netallow.CHAIN_PREFIX)  # closing removed the rest


@pytest.fixture
def own_egress(monkeypatch: pytest.MonkeyPatch, client) -> Iterator[None]:
    names = {"NETWORK": "connector-egress-fencetest", "BRIDGE": "br-cxt-fence",
             "CHAIN": "CXT-FENCE-EGR", "CHAIN_IN": "CXT-FENCE-EGR-IN"}
    for attr, value in names.items():
        monkeypatch.setattr(egress, attr, value)
    yield
    bridge = names["BRIDGE"]
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_network(names["NETWORK"])
    with firewall.host_lock():
        ipt = firewall.tool("iptables")
        assert ipt is not None
        firewall.delete_rule(ipt, "DOCKER-USER", ["-i", bridge, "-j", names["CHAIN"]])
        firewall.delete_rule(ipt, "INPUT", ["-i", bridge, "-j", names["CHAIN_IN"]])
        firewall.delete_chain(ipt, names["CHAIN"])
        firewall.delete_chain(ipt, names["CHAIN_IN"])
        ip6 = firewall.tool("ip6tables")
        for chain in ("INPUT", "FORWARD") if ip6 else ():
            firewall.delete_rule(ip6, chain, ["-i", bridge, "-j", "DROP"])


def test_an_egress_session_stops_when_its_fence_is_gone(client, tmp_path, own_egress):
    conn = _connector(tmp_path, "fence-egress", "egress")

    def flush() -> None:
        assert iptables("-D", "DOCKER-USER", "-i", egress.BRIDGE, "-j",
                        egress.CHAIN).returncode == 0

    failure = _reads_until_the_fence_is_damaged(client, conn, flush)
    assert failure.kind == FailureKind.INFRA
    assert "egress fence" in failure.message and egress.CHAIN in failure.message, failure
