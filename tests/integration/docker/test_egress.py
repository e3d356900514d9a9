"""`limits.network: egress`: outbound allowed, the host and private networks fenced off.

Every target here is on this machine: TCP servers the test starts on the host, and a
container the test starts on a network it creates. Nothing contacts any other address
(in particular, the internet is never tried).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import docker
import docker.errors
import pytest

from tests.helpers.peak import run_cli
from tests.integration.docker.test_hostile import (
    Listener,
    attack_connector,
    rows,
    sandbox_containers,
)
from worker.models import FragmentFailure
from worker.sandbox import egress, firewall
from worker.sandbox.docker import egress_network

pytestmark = pytest.mark.docker

TARGET_NET = "connector-test-target"
TARGET_SUBNET = "10.213.7.0/24"
TARGET_IP = "10.213.7.10"

REACH_CODE = r'''
import json, os, socket, threading

def context(credentials):
    return json.loads(credentials)

def list_objects(ctx, meta):
    yield {"name": "reach", "fingerprint": "1"}

def default_gateway():
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            iface, dest, gw = line.split()[:3]
            if dest == "00000000":
                return socket.inet_ntoa(bytes.fromhex(gw)[::-1])
    return "0.0.0.0"

def try_connect(host, port, out):
    # "gateway": the container's default gateway (the host's address on its bridge)
    address = default_gateway() if host == "gateway" else host
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((address, port))
        out[f"{host}:{port}"] = "connected"
    except TimeoutError:
        out[f"{host}:{port}"] = "timeout"
    except OSError as e:
        out[f"{host}:{port}"] = os.strerror(e.errno) if e.errno else type(e).__name__
    finally:
        s.close()

def read_bytes(ctx, meta):
    out = {}
    threads = [threading.Thread(target=try_connect, args=(h, p, out))
               for h, p in ctx["targets"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = {"connect": out, "interfaces": sorted(n for _, n in socket.if_nameindex())}
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6") as f:
            info["ipv6_disabled"] = f.read().strip()
    except OSError as e:
        info["ipv6_disabled"] = type(e).__name__
    with open("/etc/hosts") as f:
        info["hosts"] = f.read()
    yield json.dumps({"result": json.dumps(info)}) + "\n"
'''


def host_ipv4s() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return sorted(set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)))


def chain_counters(chain: str) -> dict[str, int]:
    """{destination: packets} of the DROP rules of one of our chains."""
    out = subprocess.run(["iptables", "-w", "5", "-L", chain, "-v", "-n", "-x"],
                         capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines()[2:]:
        f = line.split()
        if len(f) >= 9 and f[2] == "DROP":
            counts[f[8]] = counts.get(f[8], 0) + int(f[0])
    return counts


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def target(client: docker.DockerClient) -> Iterator[str]:
    """A TCP server in a container on a private network this test creates."""
    from worker.images import base_image

    with_stale = client.api.networks(names=[TARGET_NET])
    for n in with_stale:
        for c in client.api.inspect_network(n["Id"]).get("Containers") or {}:
            client.api.remove_container(c, force=True)
        client.api.remove_network(n["Id"])
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=TARGET_SUBNET)])
    net = client.networks.create(TARGET_NET, driver="bridge", ipam=ipam,
                                 labels={"io.connector.test": "1"})
    api = client.api
    created = api.create_container(
        base_image(client), ["python", "-m", "http.server", "8000"], user="10001:10001",
        labels={"io.connector.test": "1"},
        host_config=api.create_host_config(network_mode=TARGET_NET),
        networking_config=api.create_networking_config(
            {TARGET_NET: api.create_endpoint_config(ipv4_address=TARGET_IP)}))
    container = client.containers.get(created["Id"])
    container.start()
    try:
        yield TARGET_IP
    finally:
        container.remove(force=True)
        net.remove()


def test_network_and_rules_are_idempotent(client):
    assert egress.ensure_egress_network(client) == egress.NETWORK
    assert egress.ensure_egress_network(client) == egress.NETWORK
    net = client.api.inspect_network(egress.NETWORK)
    assert net["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert net["Options"]["com.docker.network.bridge.name"] == egress.BRIDGE
    assert not net["EnableIPv6"]
    fwd = subprocess.run(["iptables", "-S", egress.CHAIN], capture_output=True,
                         text=True).stdout
    for rng in egress.BLOCKED:
        assert f"-A {egress.CHAIN} -d {rng} -i {egress.BRIDGE} -j DROP" in fwd, fwd
    for chain, jump in (("DOCKER-USER", egress.CHAIN), ("INPUT", egress.CHAIN_IN)):
        rules = subprocess.run(["iptables", "-S", chain], capture_output=True,
                               text=True).stdout
        assert rules.count(f"-j {jump}") == 1, rules  # once, however often it ran
    inp = subprocess.run(["iptables", "-S", egress.CHAIN_IN], capture_output=True,
                         text=True).stdout
    assert f"-A {egress.CHAIN_IN} -i {egress.BRIDGE} -j DROP" in inp


def test_egress_refused_without_iptables(client, monkeypatch):
    monkeypatch.setattr(firewall, "tool", lambda name: None)
    with pytest.raises(egress.EgressUnavailable, match="needs iptables"):
        egress.ensure_egress_network(client)
    with pytest.raises(FragmentFailure, match="egress refused"):
        egress_network(client)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_egress_cannot_reach_host_or_private_networks(client, target, runtime, tmp_path):
    egress.ensure_egress_network(client)
    gw = egress.network_gateway(client)
    on_gateway = Listener(gw)
    on_any = Listener("0.0.0.0")
    redis_port = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")).port or 6379
    targets = [(gw, on_gateway.port), (gw, on_any.port), ("127.0.0.1", on_any.port),
               (gw, redis_port), ("127.0.0.1", redis_port), (target, 8000)]
    targets += [(ip, p) for ip in host_ipv4s() if ip != "127.0.0.1"
                for p in (on_any.port, redis_port)]
    before = chain_counters(egress.CHAIN)
    name = f"egress_probe_{runtime}"
    path = attack_connector(tmp_path / name, REACH_CODE, name, {"targets": targets},
                            f"parser: {{format: json}}\nlimits: {{network: egress, "
                            f"timeout: 60, runtime: {runtime}}}\n")
    try:
        run = run_cli(tmp_path / "out", "refresh", str(path), "--json", "--sandbox",
                      "docker")
        assert run.returncode == 0, run.stderr
        [row] = rows(tmp_path / "out", path)
        info = json.loads(row["result"])
        time.sleep(0.5)
    finally:
        on_gateway.close()
        on_any.close()
    assert on_gateway.accepted == [] and on_any.accepted == []
    for where, result in info["connect"].items():
        assert result != "connected", (where, info)
    assert len(info["connect"]) == len({f"{h}:{p}" for h, p in targets})
    if runtime == "runc":
        assert "eth0" in info["interfaces"]  # it does have a network
        assert info["ipv6_disabled"] == "1"
        # the private target was dropped by our rule, before Docker's own isolation
        assert chain_counters(egress.CHAIN).get("10.0.0.0/8", 0) > before.get("10.0.0.0/8", 0)
        # host addresses: dropped on INPUT, silently (a timeout, not a refusal)
        assert info["connect"][f"{gw}:{on_any.port}"] == "timeout"
    else:
        # gVisor is registered with --network=none: no network even with egress
        assert info["interfaces"] == ["lo"]
    assert not sandbox_containers({name})


def test_default_network_has_only_loopback(tmp_path):
    name = "egress_default"
    path = attack_connector(tmp_path / name, REACH_CODE, name, {"targets": []},
                            "parser: {format: json}\n")
    run = run_cli(tmp_path / "out", "refresh", str(path), "--json", "--sandbox", "docker")
    assert run.returncode == 0, run.stderr
    [row] = rows(tmp_path / "out", path)
    assert json.loads(row["result"])["interfaces"] == ["lo"]

