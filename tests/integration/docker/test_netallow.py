"""`limits.network: {allow: [...]}`: exactly the listed TCP host:port pairs, nothing else.

Every server here is in a network namespace this test creates (a veth pair to the
host, private 10.213.9.0/24 addresses plus one "public" documentation address routed
to it), or a listener on the host. Names are resolved through a resolver this test
controls (socket.getaddrinfo patched in-process): no DNS query leaves the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import docker
import pytest

from tests.conftest import ROOT
from tests.helpers.wait import wait_until
from tests.integration.docker.test_egress import REACH_CODE, host_ipv4s
from tests.integration.docker.test_hostile import Listener, attack_connector
from worker.models import FailureKind, FragmentFailure
from worker.sandbox import firewall, netallow
from worker.sandbox.docker import DockerSandbox, reap
from worker.spec import load_connector

pytestmark = pytest.mark.docker

HOST_SIDE = "10.213.9.1"   # the host's end of the veth: a host address
LISTED = "10.213.9.10"     # listed on port 8000
UNLISTED = "10.213.9.11"   # same namespace, not listed
IN_CIDR = "10.213.9.40"    # inside the listed 10.213.9.32/28 on port 8001
PUBLIC = "198.51.100.7"    # a non-private address, routed to the namespace
TEST_NAME = "db.connector-test.internal"

SERVER = r'''
import socket, sys, threading
lock = threading.Lock()  # print writes text and newline apart: two servers would interleave
def serve(port):
    s = socket.create_server(("0.0.0.0", port))
    while True:
        c, peer = s.accept()
        with lock:
            print(f"{c.getsockname()[0]}:{port}", flush=True)
        c.close()
for p in (8000, 8001):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Namespace:
    """A network namespace with TCP servers on 8000 and 8001 on every address; records
    which address:port each accepted connection was made to. `addresses` (CIDR-suffixed)
    are the namespace's; `routed` ones are also routed to it from the host."""

    def __init__(self, prefix: str = "cx", host_side: str = HOST_SIDE,
                 addresses: tuple[str, ...] = (f"{LISTED}/24", f"{UNLISTED}/24",
                                               f"{IN_CIDR}/24", f"{PUBLIC}/32"),
                 routed: tuple[str, ...] = (PUBLIC,)) -> None:
        tag = f"{os.getpid() % 100000}"
        self.name, self.veth = f"{prefix}na{tag}", f"v{prefix}{tag}"
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self.veth}h"], capture_output=True)
        ip("netns", "add", self.name)
        ip("link", "add", f"{self.veth}h", "type", "veth", "peer", "name", f"{self.veth}n")
        ip("link", "set", f"{self.veth}n", "netns", self.name)
        ip("addr", "add", f"{host_side}/24", "dev", f"{self.veth}h")
        ip("link", "set", f"{self.veth}h", "up")
        for addr in addresses:
            ip("-n", self.name, "addr", "add", addr, "dev", f"{self.veth}n")
        ip("-n", self.name, "link", "set", f"{self.veth}n", "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        for address in routed:
            ip("route", "add", f"{address}/32", "dev", f"{self.veth}h")
        self.accepted: list[str] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", SERVER],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.accepted.append(line.strip())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self.veth}h"], capture_output=True)


@pytest.fixture(scope="module")
def ns() -> Iterator[Namespace]:
    n = Namespace()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """name -> IPv4 answers of the host's resolver for this test; other names fail as
    unknown (no query leaves the machine)."""
    answers: dict[str, str] = {}

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002, ANN
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]

    monkeypatch.setattr(netallow.socket, "getaddrinfo", getaddrinfo)
    return answers


def our_chains() -> list[str]:
    out = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True,
                         text=True).stdout
    return sorted(line.split()[1] for line in out.splitlines()
                  if line.startswith(f"-N {netallow.CHAIN_PREFIX}"))


def session_networks(client: docker.DockerClient) -> list[str]:
    return [n["Name"] for n in client.api.networks(filters={"label": netallow.LABEL})]


def probe(client: docker.DockerClient, folder: Path) -> dict:
    """Open a session (in-process: the test's resolver applies), read the probe, close;
    -> the probe's report plus the chains that existed while it ran."""
    conn = load_connector(folder)
    session = DockerSandbox(client).open(conn, conn.read_credentials())
    try:
        [fragment] = list(session.list())
        batches = list(session.read(fragment))
        during = our_chains()
    finally:
        session.close()
    info = json.loads(batches[0].column("result").to_pylist()[0])
    info["chains_during"] = during
    return info


def probe_folder(tmp_path: Path, name: str, allow: list[str],
                 targets: list[tuple[str, int]]) -> Path:
    return attack_connector(tmp_path / name, REACH_CODE, name, {"targets": targets},
                            f"parser: {{format: json}}\nlimits:\n  timeout: 60\n"
                            f"  network:\n    allow: {json.dumps(allow)}\n")


def test_listed_pairs_reachable_everything_else_dropped(client, ns, tmp_path):
    on_host = Listener("0.0.0.0")
    redis_port = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6390")).port or 6390
    allowed = [(LISTED, 8000), (IN_CIDR, 8001)]
    blocked = [(LISTED, 8001), (UNLISTED, 8000), (IN_CIDR, 8000), (PUBLIC, 8000),
               (HOST_SIDE, on_host.port), ("gateway", on_host.port), ("gateway", redis_port),
               ("127.0.0.1", on_host.port),
               ("127.0.0.1", redis_port), ("169.254.169.254", 80)]
    blocked += [(h, p) for h in host_ipv4s() if h not in ("127.0.0.1", HOST_SIDE)
                for p in (on_host.port, redis_port)]
    before = list(ns.accepted)
    folder = probe_folder(tmp_path, "allow_probe", [f"{LISTED}:8000", "10.213.9.32/28:8001"],
                          allowed + blocked)
    try:
        info = probe(client, folder)
    finally:
        on_host.close()
    for h, p in allowed:
        assert info["connect"][f"{h}:{p}"] == "connected", info
    for h, p in blocked:
        assert info["connect"][f"{h}:{p}"] != "connected", (h, p, info)
    # the namespace saw exactly the allowed connections, the host none
    assert sorted(set(ns.accepted) - set(before)) == [f"{LISTED}:8000", f"{IN_CIDR}:8001"]
    assert on_host.accepted == []
    # rules and network removed after the session
    assert len(info["chains_during"]) == 1
    assert all(c not in our_chains() for c in info["chains_during"])
    assert not [n for n in session_networks(client) if "allow_probe" in n]


def test_name_is_resolved_by_the_host_and_pinned(client, ns, tmp_path, fake_dns):
    fake_dns[TEST_NAME] = LISTED
    folder = probe_folder(tmp_path, "allow_name", [f"{TEST_NAME}:8000"],
                          [(TEST_NAME, 8000), (TEST_NAME, 8001), (UNLISTED, 8000)])
    info = probe(client, folder)
    assert info["connect"][f"{TEST_NAME}:8000"] == "connected", info
    assert info["connect"][f"{TEST_NAME}:8001"] != "connected", info
    assert info["connect"][f"{UNLISTED}:8000"] != "connected", info
    hosts = [line.split() for line in info["hosts"].splitlines()]
    assert [LISTED, TEST_NAME] in hosts, info["hosts"]


def test_unresolvable_name_fails_the_start_naming_it(client, tmp_path, fake_dns):
    folder = probe_folder(tmp_path, "allow_nxdomain", ["nope.connector-test.internal:443"],
                          [])
    conn = load_connector(folder)
    chains, nets = our_chains(), session_networks(client)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(client).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.USER
    assert "nope.connector-test.internal" in str(e.value)
    assert "does not resolve" in str(e.value)
    assert our_chains() == chains and session_networks(client) == nets


@pytest.mark.parametrize("answer", ["127.0.0.1", "169.254.169.254", HOST_SIDE])
def test_name_resolving_to_a_forbidden_address_is_refused(client, ns, tmp_path, fake_dns,
                                                          answer):
    fake_dns[TEST_NAME] = answer
    folder = probe_folder(tmp_path, "allow_rebind", [f"{TEST_NAME}:8000"], [])
    conn = load_connector(folder)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(client).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.USER
    assert f"{TEST_NAME} resolved to {answer}" in str(e.value), str(e.value)


def test_listing_a_host_address_is_refused(client, ns, tmp_path):
    folder = probe_folder(tmp_path, "allow_host", [f"{HOST_SIDE}:22"], [])
    conn = load_connector(folder)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(client).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.USER
    assert f"{HOST_SIDE}:22" in str(e.value) and "this host's own" in str(e.value)


def test_concurrent_sessions_keep_their_own_allowances(client, ns, tmp_path):
    a = load_connector(probe_folder(tmp_path, "allow_a", [f"{LISTED}:8000"],
                                    [(LISTED, 8000), (UNLISTED, 8000)]))
    b = load_connector(probe_folder(tmp_path, "allow_b", [f"{UNLISTED}:8000"],
                                    [(LISTED, 8000), (UNLISTED, 8000)]))
    box = DockerSandbox(client)
    sa = box.open(a, a.read_credentials())
    try:
        sb = box.open(b, b.read_credentials())
        try:
            results = {}
            for key, s in (("a", sa), ("b", sb)):
                [fragment] = list(s.list())
                batch = list(s.read(fragment))[0]
                results[key] = json.loads(batch.column("result").to_pylist()[0])["connect"]
        finally:
            sb.close()
    finally:
        sa.close()
    assert results["a"][f"{LISTED}:8000"] == "connected"
    assert results["a"][f"{UNLISTED}:8000"] != "connected"
    assert results["b"][f"{UNLISTED}:8000"] == "connected"
    assert results["b"][f"{LISTED}:8000"] != "connected"


def test_no_fence_no_start(client, tmp_path, monkeypatch):
    monkeypatch.setattr(firewall, "tool", lambda name: None)
    folder = probe_folder(tmp_path, "allow_nofence", [f"{LISTED}:8000"], [])
    conn = load_connector(folder)
    nets = session_networks(client)
    with pytest.raises(FragmentFailure) as e:
        DockerSandbox(client).open(conn, conn.read_credentials())
    assert e.value.kind == FailureKind.INFRA
    assert "network allowlist refused" in str(e.value) and "iptables" in str(e.value)
    assert session_networks(client) == nets


OPEN_AND_HANG = r'''
import sys, time
from worker.sandbox.docker import DockerSandbox
from worker.spec import load_connector
conn = load_connector(sys.argv[1])
session = DockerSandbox().open(conn, conn.read_credentials())
print("open", flush=True)
time.sleep(600)
'''


def test_reaping_removes_rules_and_network_of_dead_sessions(client, ns, tmp_path):
    folder = probe_folder(tmp_path, "allow_dead", [f"{LISTED}:8000"], [])
    before_chains, before_nets = set(our_chains()), set(session_networks(client))
    proc = subprocess.Popen([sys.executable, "-c", OPEN_AND_HANG, str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        left_chains = set(our_chains()) - before_chains
        left_nets = set(session_networks(client)) - before_nets
        assert left_chains and left_nets
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no atexit, no finally: the worker died
        proc.wait()
    assert left_chains <= set(our_chains())  # a killed worker leaves them behind
    reap(client)
    wait_until(lambda: not (left_chains & set(our_chains())), timeout=30)
    assert not left_nets & set(session_networks(client))
    rules = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True,
                           text=True).stdout
    for chain in left_chains:
        assert chain not in rules


def test_name_resolving_outside_the_operators_networks_is_refused(client, ns, tmp_path,
                                                                  fake_dns, monkeypatch):
    from worker.settings import settings

    monkeypatch.setenv("CONNECTOR_NETWORK_ALLOW_WITHIN", "10.213.9.32/28")
    settings.cache_clear()
    try:
        fake_dns[TEST_NAME] = LISTED
        folder = probe_folder(tmp_path, "allow_within", [f"{TEST_NAME}:8000"], [])
        conn = load_connector(folder)
        with pytest.raises(FragmentFailure) as e:
            DockerSandbox(client).open(conn, conn.read_credentials())
    finally:
        monkeypatch.delenv("CONNECTOR_NETWORK_ALLOW_WITHIN")
        settings.cache_clear()
    assert f"{TEST_NAME} resolved to {LISTED}, which is outside the networks the operator " \
           "allows (10.213.9.32/28" in str(e.value)


@pytest.mark.redis
def test_queue_worker_applies_the_deployed_allowlist_and_its_own_bound(queue_env, ns,
                                                                       tmp_path, client):
    from cryptography.fernet import Fernet

    queue_env.env.update(CONNECTOR_SANDBOX="docker",
                         CONNECTOR_SECRET_KEY=Fernet.generate_key().decode())
    targets = [(LISTED, 8000), (UNLISTED, 8000), (IN_CIDR, 8001)]
    inside = probe_folder(tmp_path, "allow_q", [f"{LISTED}:8000"], targets)
    outside = probe_folder(tmp_path, "allow_q_out", [f"{IN_CIDR}:8001"], targets)
    for folder in (inside, outside):
        queue_env.deploy(folder)  # the deployer sets no bound
    nets_before, chains_before = set(session_networks(client)), set(our_chains())
    # the worker's operator allows 10.213.9.0/28 only: .40 is outside it
    workers = queue_env.start_workers(1, env={"CONNECTOR_NETWORK_ALLOW_WITHIN": "10.213.9.0/28"})
    r, s = queue_env.refresh("allow_q", "default")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    [row] = queue_env.rows("allow_q", "default")
    connect = json.loads(row["result"])["connect"]
    assert connect == {f"{LISTED}:8000": "connected", f"{UNLISTED}:8000": "timeout",
                       f"{IN_CIDR}:8001": "timeout"}, connect
    r, s = queue_env.refresh("allow_q_out", "default")
    assert r.returncode != 0 and s["failed"] == 1, r.stdout + r.stderr
    msg = " ".join((r.stdout + r.stderr).split())
    assert f"limits.network.allow: '{IN_CIDR}:8001' is outside the networks the operator " \
           "allows (10.213.9.0/28" in msg, msg
    queue_env.stop()
    assert workers.returncode == 0, queue_env.logs()
    # the worker's sessions took their networks and rules with them
    assert set(session_networks(client)) <= nets_before
    assert set(our_chains()) <= chains_before
