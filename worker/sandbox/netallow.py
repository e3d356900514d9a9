"""Per-session networks for connectors with an allowlist (`limits.network: {allow: [...]}`).

A connector that reads a database on a private network needs exactly that address and
port, not the internet and not the rest of the private network. Each Docker session of
such a connector gets a network of its own, fenced by rules of its own:

1. **Pinning.** Entries are parsed by worker/spec.py (IPv4 address, CIDR or DNS name,
   one TCP port each). Names are resolved here, on the worker, when the session starts
   (the first IPv4 answer), and pinned for the session: the firewall allows that
   address and the container's /etc/hosts maps the name to it (`extra_hosts`), so the
   container needs no DNS. A name that does not resolve, or resolves into loopback,
   link-local/metadata, multicast or reserved space or to one of this host's own
   addresses, fails the start as the user's error naming the name and the address
   (a hostile or rebinding resolver gains nothing). An entry that IS one of the host's
   addresses is refused the same way, and so is one that is (or a name that resolves
   to) the deployment's own Redis (REDIS_URL's host): it holds every tenant's state and
   the RQ jobs workers unpickle, so reaching it is reaching every worker.

2. **A network per session.** A bridge network `connector-allow-<id>` whose Linux
   bridge is `cxa-<id>` (so rules can match the interface), IPv4 only, ICC off,
   masquerading on, on a /28 picked from `CONNECTOR_ALLOW_BRIDGE_POOL` that overlaps no
   Docker network, no host route and no allowed network. One container per network:
   sessions never share a bridge, so one session's allowances are not another's.

3. **Rules of the session (iptables, filter table)**, installed before the network
   exists and removed after it is gone:
   - chain `CONN-ALLOW-<id>`, jumped to from the top of DOCKER-USER for packets coming
     in on `cxa-<id>`: packets out to another sandbox or Docker bridge (`cxa-+`,
     `br-+`, `docker0`) are dropped (the host's containers are never reachable, even
     inside an allowed range); so are packets to the deployment's Redis (a listed
     network may hold it); then one ACCEPT per pinned network and TCP port; then
     DROP for everything else (other ports, other addresses, UDP, DNS, the internet);
   - INPUT: everything coming in on `cxa-<id>` is dropped: the host's own addresses
     (the bridge's gateway, eth0's address, an address inside an allowed range) are
     delivered locally and never reach FORWARD;
   - where ip6tables works, the same INPUT/FORWARD drop in IPv6 (containers also get
     IPv6 disabled).

4. **Fail closed.** Without a working iptables, `EgressUnavailable`: no start.
   Setting up (rules, then network) and reaping run under the host-wide lock, so a
   reaper never sees a network-less chain of a session still being set up.

5. **Checked while it runs.** `AllowSession.fence` lists the session's jumps and chain
   rules; the session checks them at every fragment boundary and, if any is gone (an
   operator flushed DOCKER-USER, a firewall reload), stops the container and fails the
   fragment as `infra` naming the fence (worker/sandbox/session.py).

6. **Reaping.** `reap` removes the networks of dead owners (after their containers),
   then every `CONN-ALLOW-*` chain, and its jumps, whose network is gone.

UDP is not offered: every entry is TCP. Under gVisor (`limits.runtime: runsc`,
registered with `--network=none`) the container has no network at all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterable
from urllib.parse import urlparse

import docker
import docker.errors
from pydantic import BaseModel, ConfigDict

from worker.ceilings import outside_operator_networks
from worker.errors import ConnectorError, FailureKind
from worker.sandbox import firewall
from worker.sandbox.firewall import EgressUnavailable
from worker.settings import settings
from worker.spec import AllowTarget, NetworkAllow, forbidden_reason

NETWORK_PREFIX = "connector-allow-"
BRIDGE_PREFIX = "cxa-"
CHAIN_PREFIX = "CONN-ALLOW-"
LABEL = "io.connector.allow"
LABEL_OWNER = "io.connector.owner"
SUBNET_PREFIX = 28
OTHER_BRIDGES = (f"{BRIDGE_PREFIX}+", "br-+", "docker0")


class AllowRefused(ConnectorError):
    """An allowlist entry that cannot be pinned here: the connector's own doing."""

    kind = FailureKind.USER


class Pinned(BaseModel):
    """An allowlist entry as the session's fence holds it."""

    model_config = ConfigDict(frozen=True)

    entry: str
    network: str  # IPv4 CIDR; a single address is a /32
    port: int
    name: str | None = None  # the DNS name pinned to `network`'s address


def host_addresses() -> set[ipaddress.IPv4Address]:
    """Every IPv4 address of this host's interfaces."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                         text=True, check=False).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            found.add(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).ip)
    return found


def resolve(name: str) -> ipaddress.IPv4Address:
    """The first IPv4 answer of the host's resolver for `name`."""
    try:
        answers = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise AllowRefused(f"limits.network.allow: {name} does not resolve on this "
                           f"worker ({e})") from None
    for family, _, _, _, addr in answers:
        if family == socket.AF_INET:
            return ipaddress.IPv4Address(addr[0])
    raise AllowRefused(f"limits.network.allow: {name} does not resolve to an IPv4 "
                       "address on this worker")


def operator_services() -> dict[ipaddress.IPv4Address, str]:
    """The addresses of the deployment's own services no sandbox may reach, each with
    what it is: Redis (every IPv4 address REDIS_URL's host has). Loopback ones are
    refused anyway and left out."""
    url = settings().redis_url
    try:
        host = urlparse(url).hostname
    except ValueError:
        host = None
    if not host:
        return {}
    found: set[ipaddress.IPv4Address] = set()
    try:
        found.add(ipaddress.IPv4Address(host))
    except ValueError:
        with contextlib.suppress(OSError, UnicodeError):
            for family, _, _, _, addr in socket.getaddrinfo(host, None, socket.AF_INET,
                                                            socket.SOCK_STREAM):
                if family == socket.AF_INET:
                    found.add(ipaddress.IPv4Address(addr[0]))
    return {a: f"this deployment's Redis ({host}, REDIS_URL)"
            for a in found if not a.is_loopback}


def pin(targets: Iterable[AllowTarget], host_ips: set[ipaddress.IPv4Address],
        services: dict[ipaddress.IPv4Address, str] | None = None) -> list[Pinned]:
    """Entries -> pinned networks; AllowRefused naming the entry (and what a name
    resolved to) when it would open something no entry may. `services`: the
    operator's own addresses (`operator_services`), refused as entries; a listed
    network that holds one still never reaches it (the chain drops it first)."""
    services = services or {}
    pinned = []
    for t in targets:
        if t.is_name:
            address = resolve(t.host)
            net = ipaddress.IPv4Network(f"{address}/32")
            problem = forbidden_reason(net)
            if problem is None and address in host_ips:
                problem = "this host's own address"
            if problem is None and address in services:
                problem = services[address]
            if problem is None and (outside := outside_operator_networks(net)):
                problem = outside
            if problem is not None:
                raise AllowRefused(f"limits.network.allow: {t.entry!r}: {t.host} resolved "
                                   f"to {address}, which is {problem}; refused")
            pinned.append(Pinned(entry=t.entry, network=str(net), port=t.port, name=t.host))
            continue
        net = ipaddress.IPv4Network(t.host)
        if net.prefixlen == 32 and net.network_address in host_ips:
            raise AllowRefused(f"limits.network.allow: {t.entry!r} is this host's own "
                               "address; the worker's host is never reachable from a sandbox")
        if net.prefixlen == 32 and net.network_address in services:
            raise AllowRefused(f"limits.network.allow: {t.entry!r} is "
                               f"{services[net.network_address]}; the deployment's own "
                               "services are never reachable from a sandbox")
        pinned.append(Pinned(entry=t.entry, network=str(net), port=t.port))
    return pinned


def chain_rules(session_id: str, pinned: Iterable[Pinned],
                services: Iterable[ipaddress.IPv4Address] = ()) -> list[list[str]]:
    """The session chain's rules, in order."""
    rules = [["-o", bridge, "-j", "DROP"] for bridge in OTHER_BRIDGES]
    rules += [["-d", f"{a}/32", "-j", "DROP"] for a in sorted(services)]
    rules += [["-d", p.network, "-p", "tcp", "--dport", str(p.port), "-j", "ACCEPT"]
              for p in pinned]
    rules.append(["-j", "DROP"])
    return rules


def _jumps(session_id: str) -> list[tuple[str, list[str]]]:
    bridge, chain = BRIDGE_PREFIX + session_id, CHAIN_PREFIX + session_id
    return [("DOCKER-USER", ["-i", bridge, "-j", chain]), ("INPUT", ["-i", bridge, "-j", "DROP"])]


def _install_rules(session_id: str, pinned: list[Pinned],
                   services: Iterable[ipaddress.IPv4Address] = ()) -> None:
    ipt = firewall.tool("iptables")
    if ipt is None:
        raise EgressUnavailable(
            "limits.network.allow needs iptables on the worker host (run as root, with "
            "netfilter) to fence the sandbox to its allowlist; it is not available here, "
            "so the network is refused")
    chain = CHAIN_PREFIX + session_id
    firewall.ensure_chain(ipt, chain)
    firewall.run(ipt, "-F", chain)  # a fresh id, but never trust leftovers
    for rule in chain_rules(session_id, pinned, services):
        firewall.ensure_rule(ipt, chain, rule)
    firewall.ensure_chain(ipt, "DOCKER-USER")
    for parent, rule in _jumps(session_id):
        firewall.ensure_rule(ipt, parent, rule, first=True)
    ip6 = firewall.tool("ip6tables")
    if ip6 is not None:
        for parent in ("INPUT", "FORWARD"):
            firewall.ensure_rule(ip6, parent, ["-i", BRIDGE_PREFIX + session_id, "-j", "DROP"],
                                 first=True)


def _remove_rules(session_id: str) -> None:
    ipt = firewall.tool("iptables")
    if ipt is not None:
        for parent, rule in _jumps(session_id):
            firewall.delete_rule(ipt, parent, rule)
        firewall.delete_chain(ipt, CHAIN_PREFIX + session_id)
    ip6 = firewall.tool("ip6tables")
    if ip6 is not None:
        for parent in ("INPUT", "FORWARD"):
            firewall.delete_rule(ip6, parent, ["-i", BRIDGE_PREFIX + session_id, "-j", "DROP"])


def _taken(client: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    """Networks a session subnet must not overlap: Docker's and the host's routes."""
    taken = []
    for net in client.api.networks():
        for config in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                subnet = ipaddress.ip_network(config["Subnet"])
                if isinstance(subnet, ipaddress.IPv4Network):
                    taken.append(subnet)
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=False).stdout
    for line in routes.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            dest = line.split()[0]
            if dest != "default":
                taken.append(ipaddress.IPv4Network(dest, strict=False))
    return taken


def _pick_subnet(client: docker.DockerClient, pinned: list[Pinned]) -> ipaddress.IPv4Network:
    pool = ipaddress.IPv4Network(settings().allow_bridge_pool)
    for p in pinned:
        # The allowlist alone leaves no room: the connector's doing, never retried as infra.
        if ipaddress.IPv4Network(p.network).supernet_of(pool):
            raise AllowRefused(
                f"limits.network.allow: {p.entry!r} covers the whole network sandbox "
                f"sessions get their own networks from (CONNECTOR_ALLOW_BRIDGE_POOL, {pool}); "
                "list narrower networks")
    avoid = _taken(client) + [ipaddress.IPv4Network(p.network) for p in pinned]
    candidates = list(pool.subnets(new_prefix=max(SUBNET_PREFIX, pool.prefixlen)))
    start = random.randrange(len(candidates))  # concurrent hosts rarely try the same one
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(a) for a in avoid):
            return subnet
    raise EgressUnavailable(
        f"no free /{SUBNET_PREFIX} left in CONNECTOR_ALLOW_BRIDGE_POOL ({pool}) for a sandbox "
        "network that overlaps neither Docker's networks, the host's routes nor the "
        "allowlist")


class AllowSession:
    """One session's network and fence; `close` removes both (after the container)."""

    def __init__(self, session_id: str, pinned: list[Pinned]) -> None:
        self.id = session_id
        self.network = NETWORK_PREFIX + session_id
        self.pinned = pinned
        self.extra_hosts = {p.name: p.network.split("/")[0] for p in pinned if p.name}
        self._closed = False

    def fence(self) -> firewall.Fence:
        """The rules this session's traffic depends on, for checks while it runs."""
        chain = CHAIN_PREFIX + self.id
        return firewall.Fence(
            f"the network allowlist fence of this session (chain {chain}, jumped to from "
            f"DOCKER-USER for {BRIDGE_PREFIX}{self.id})",
            [*_jumps(self.id), *((chain, rule) for rule in chain_rules(self.id, self.pinned))])

    def close(self, client: docker.DockerClient) -> None:
        """Remove the network, then the rules. If the engine cannot remove the network
        (a container is still attached: its removal failed), the rules stay and
        `reap` removes both later: never a network without its fence."""
        if self._closed:
            return
        try:
            client.api.remove_network(self.network)
        except docker.errors.NotFound:
            pass
        except Exception:  # the engine is away or the container is still attached
            return
        with firewall.host_lock():
            _remove_rules(self.id)
        self._closed = True


def open_session(client: docker.DockerClient, allow: NetworkAllow, owner: str) -> AllowSession:
    """A fenced network for one session of a connector with this allowlist. Raises
    AllowRefused (the user's) or EgressUnavailable (no fence here: never unfenced)."""
    services = operator_services()
    pinned = pin(allow.targets, host_addresses(), services)
    session_id = secrets.token_hex(5)
    session = AllowSession(session_id, pinned)
    with firewall.host_lock():
        subnet = _pick_subnet(client, pinned)
        _install_rules(session_id, pinned, services)  # before the network: never unfenced
        try:
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet=str(subnet), gateway=str(next(subnet.hosts())))])
            client.api.create_network(
                session.network, driver="bridge", check_duplicate=True, internal=False,
                enable_ipv6=False, ipam=ipam,
                options={"com.docker.network.bridge.name": BRIDGE_PREFIX + session_id,
                         "com.docker.network.bridge.enable_icc": "false",
                         "com.docker.network.bridge.enable_ip_masquerade": "true"},
                labels={LABEL: session_id, LABEL_OWNER: owner})
        except docker.errors.APIError as e:
            _remove_rules(session_id)
            raise EgressUnavailable(f"could not create docker network {session.network!r}: "
                                    f"{e.explanation or e}") from None
    return session


def reap(client: docker.DockerClient, owner_alive: Callable[[str], bool],
         everything: bool = False) -> int:
    """Remove session networks of dead owners (their containers must be gone), then the
    rules of every session whose network is gone. Returns the networks removed."""
    n = 0
    with firewall.host_lock():
        live: set[str] = set()
        for net in client.api.networks(filters={"label": LABEL}):
            labels = net.get("Labels") or {}
            session_id = str(labels.get(LABEL, ""))
            if everything or not owner_alive(str(labels.get(LABEL_OWNER, ""))):
                try:
                    client.api.remove_network(net["Id"])
                    n += 1
                    continue
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError:
                    pass  # still attached: keep its fence
            live.add(session_id)
        ipt = firewall.tool("iptables")
        if ipt is None:
            return n
        for chain in firewall.chains(ipt, CHAIN_PREFIX):
            session_id = chain.removeprefix(CHAIN_PREFIX)
            if session_id not in live:
                _remove_rules(session_id)
    return n
