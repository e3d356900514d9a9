"""Egress for connectors that opted in (`limits.network: egress`), fenced off from the host.

A connector that calls an API needs outbound traffic; it must still not reach the host,
the worker's services (Redis, the Docker API, anything on loopback or a private
address) or link-local/metadata endpoints. Docker alone does not give that: a container
on a bridge can talk to the host on the bridge's gateway IP (and to every other host
IP), and the host routes it on to any private network the host can see.

How it works
------------
1. **One user-defined bridge network** `connector-egress`, with a fixed Linux bridge
   name (`br-conn-egress`, so firewall rules can match the interface), IPv4 only,
   masquerading on (outbound traffic leaves with the host's address) and
   `com.docker.network.bridge.enable_icc=false`: containers on it cannot talk to each
   other (Docker adds the FORWARD drop; our own chain drops it too).

2. **Host firewall rules (iptables, filter table)**, in two chains of our own so they
   are easy to see and never interleave with Docker's:

   - `CONNECTOR-EGRESS`, jumped to from `DOCKER-USER` (Docker evaluates DOCKER-USER
     first in FORWARD, before its own accept rules, and never flushes it) for packets
     coming in on the bridge: traffic to the bridge itself is dropped, then DNS to the
     host's own non-loopback resolvers is allowed (udp/tcp 53 only; see below), then
     every destination in `BLOCKED` is dropped: 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10
     (carrier-grade NAT), 127.0.0.0/8, 169.254.0.0/16 (link-local: cloud metadata),
     172.16.0.0/12 (this includes every other Docker network), 192.168.0.0/16,
     224.0.0.0/4 and 240.0.0.0/4; so is the deployment's Redis (every address of
     REDIS_URL's host) when it sits on a public address, which the ranges above would
     let through. Anything else returns to Docker's rules: allowed out.
     Forwarded packets are seen after DNAT, so "host-port -> published container port"
     tricks land on a 172.16/12 address and are dropped too.
   - `CONNECTOR-EGRESS-IN`, jumped to from the top of `INPUT` for packets coming in on
     the bridge: everything is dropped. A packet addressed to ANY of the host's own
     addresses (the gateway, eth0's address, a public IP...) is delivered locally and
     never seen by FORWARD; this is the rule that keeps sandboxes off the host's
     services (Redis, the Docker API on TCP, sshd...).
   - IPv6: the network has no IPv6, containers on it get
     `net.ipv6.conf.all.disable_ipv6=1` (see worker/sandbox/docker.py), and, where
     `ip6tables` works, the same INPUT/FORWARD drop for the bridge in IPv6, so the
     bridge's fe80:: link-local address does not become a way to the host.

3. **Fail closed.** Without a working `iptables` (not installed, not root, no
   netfilter), `ensure_egress_network` raises `EgressUnavailable` and the connector
   does not start: egress is never silently granted without the fence.

4. **Checked while a session runs.** `fence()` lists the rules above (the DOCKER-USER
   and INPUT jumps, every rule of both chains); a session on the network checks them at
   every fragment boundary and, if any is gone, stops its container and fails the
   fragment as `infra` naming the fence; the next session's `ensure_egress_network`
   puts them back (worker/sandbox/session.py).

5. **Idempotent and concurrent-safe.** Every call checks each rule (`iptables -C`)
   and adds only the missing ones, under a host-wide file lock and iptables' own
   `-w` lock; nothing is ever flushed, so a running sandbox never sees a window
   without rules. Calling it again after a firewall reload restores the rules.

DNS: containers on a user-defined network resolve through Docker's embedded resolver
(127.0.0.11 inside the container), which forwards to the host's resolvers from inside
the container's network namespace. When those are private addresses (common in
clouds), they are allowed on port 53 and nothing else. That is the one hole in the
private-range fence, by design: DNS to the resolver the host itself uses.

Limits of the fence: it cannot tell a public address of your own infrastructure from
the internet; services reachable on public IPs must authenticate. Under gVisor
(`limits.runtime: runsc`, registered with `--network=none`) a container has no network
even with egress: it is contained, and cannot call APIs.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import docker
import docker.errors

from worker.sandbox import firewall
from worker.sandbox.firewall import EgressUnavailable

__all__ = ["EgressUnavailable", "ensure_egress_network", "fence", "network_gateway"]

NETWORK = "connector-egress"
BRIDGE = "br-conn-egress"
CHAIN = "CONNECTOR-EGRESS"
CHAIN_IN = "CONNECTOR-EGRESS-IN"
LABEL = "io.connector.egress"
BLOCKED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
CONTAINER_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "1",
                     "net.ipv6.conf.default.disable_ipv6": "1"}


def host_resolvers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """The host's non-loopback IPv4 nameservers (Docker's resolver forwards to them)."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path(resolv_conf).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    ip = ipaddress.ip_address(parts[1])
                except ValueError:
                    continue
                if ip.version == 4 and not ip.is_loopback and not ip.is_unspecified:
                    out.append(str(ip))
    return out


def operator_addresses() -> list[str]:
    """The deployment's own services on addresses `BLOCKED` does not cover (REDIS_URL's
    host on a public address): the one public destination egress never reaches."""
    from worker.sandbox.netallow import operator_services

    blocked = [ipaddress.IPv4Network(b) for b in BLOCKED]
    return sorted(str(a) for a in operator_services() if not any(a in b for b in blocked))


def firewall_rules() -> dict[str, list[list[str]]]:
    """The IPv4 rules of our two chains, in order (what `ensure` installs)."""
    fwd: list[list[str]] = [["-i", BRIDGE, "-o", BRIDGE, "-j", "DROP"]]
    # Redis holds every tenant's state and the jobs workers run
    fwd += [["-i", BRIDGE, "-d", f"{a}/32", "-j", "DROP"] for a in operator_addresses()]
    for ns in host_resolvers():
        for proto in ("udp", "tcp"):
            fwd.append(["-i", BRIDGE, "-d", f"{ns}/32", "-p", proto, "--dport", "53",
                        "-j", "RETURN"])
    fwd += [["-i", BRIDGE, "-d", net, "-j", "DROP"] for net in BLOCKED]
    return {CHAIN: fwd, CHAIN_IN: [["-i", BRIDGE, "-j", "DROP"]]}


def _jumps() -> list[tuple[str, list[str]]]:
    return [("DOCKER-USER", ["-i", BRIDGE, "-j", CHAIN]), ("INPUT", ["-i", BRIDGE, "-j", CHAIN_IN])]


def fence() -> firewall.Fence:
    """The rules an egress session's traffic depends on, for checks while it runs."""
    return firewall.Fence(
        f"the egress fence (chain {CHAIN}, jumped to from DOCKER-USER for {BRIDGE}, and "
        f"{CHAIN_IN} from INPUT)",
        [*_jumps(), *((chain, rule) for chain, rules in firewall_rules().items()
                      for rule in rules)])


def _ensure_firewall() -> None:
    ipt = firewall.tool("iptables")
    if ipt is None:
        raise EgressUnavailable(
            "limits.network: egress needs iptables on the worker host (run as root, with "
            "netfilter) to keep sandboxes off the host and private networks; it is not "
            "available here, so egress is refused")
    for chain, rules in firewall_rules().items():
        firewall.ensure_chain(ipt, chain)
        for rule in rules:
            firewall.ensure_rule(ipt, chain, rule)
    firewall.ensure_chain(ipt, "DOCKER-USER")  # Docker creates it; make sure it exists
    for parent, rule in _jumps():
        firewall.ensure_rule(ipt, parent, rule, first=True)
    ip6 = firewall.tool("ip6tables")
    if ip6 is not None:  # belt and braces: containers also get IPv6 disabled
        for chain in ("INPUT", "FORWARD"):
            firewall.ensure_rule(ip6, chain, ["-i", BRIDGE, "-j", "DROP"], first=True)


def _ensure_network(client: docker.DockerClient) -> str:
    try:
        net = client.api.inspect_network(NETWORK)
    except docker.errors.NotFound:
        net = None
    if net is not None:
        opts = net.get("Options") or {}
        if (opts.get("com.docker.network.bridge.name") != BRIDGE
                or opts.get("com.docker.network.bridge.enable_icc") != "false"
                or net.get("EnableIPv6")):
            raise EgressUnavailable(
                f"docker network {NETWORK!r} exists but was not created by connector-host "
                f"(bridge name, ICC or IPv6 differ); remove it and retry")
        return str(net["Id"])
    created = client.api.create_network(
        NETWORK, driver="bridge", check_duplicate=True, internal=False, enable_ipv6=False,
        options={"com.docker.network.bridge.name": BRIDGE,
                 "com.docker.network.bridge.enable_icc": "false",
                 "com.docker.network.bridge.enable_ip_masquerade": "true"},
        labels={LABEL: "1"})
    return str(created["Id"])


def ensure_egress_network(client: docker.DockerClient) -> str:
    """The name of the egress network, with its firewall in place (created if missing).

    Raises `EgressUnavailable` when the firewall cannot be installed: never egress
    without it."""
    with firewall.host_lock():
        # Firewall first: the network must not exist a moment without its fence.
        _ensure_firewall()
        try:
            _ensure_network(client)
        except docker.errors.APIError as e:
            raise EgressUnavailable(f"could not create docker network {NETWORK!r}: "
                                    f"{e.explanation or e}") from None
    return NETWORK


def network_gateway(client: docker.DockerClient, name: str = NETWORK) -> str:
    """A bridge network's gateway IP: the host's address on it (the egress network's by
    default). Docker leaves `Gateway` out of IPAM when it picked the first address."""
    config = client.api.inspect_network(name)["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
