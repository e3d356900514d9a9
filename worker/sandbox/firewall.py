"""The host firewall (iptables, filter table) as the sandbox networks use it.

Rules are checked (`-C`) before they are added, so installing is idempotent; every
call goes through iptables' own `-w` lock, and changes that must not interleave
across workers of this host (create a network and its fence; reap) run under
`host_lock`, a file lock. A firewall that cannot be changed raises
`EgressUnavailable`: a sandbox network is never granted without its fence.

A `Fence` is the set of rules one running session depends on, checked while it runs
(worker/sandbox/session.py asks at every fragment boundary): one `iptables -S` (a few
milliseconds), each expected rule looked up in its chain. A rule is compared as its set
of option/value pairs, minus the `-m tcp`/`-m udp` that iptables adds when it lists a
`--dport`, so the listing's own spelling of a rule matches the one installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker.errors import InfraError

LOCK_PATH = Path(tempfile.gettempdir()) / "connector-egress.lock"

_thread_lock = threading.Lock()


class EgressUnavailable(InfraError):
    """A network was asked for but cannot be fenced on this host: refuse, never allow."""


def run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-w", "5", *args], capture_output=True, text=True,
                          timeout=30, check=False)


def tool(name: str) -> str | None:
    """The path of `iptables`/`ip6tables` if it works here (root, netfilter), else None."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        return None
    r = run(path, "-S", "INPUT")
    return path if r.returncode == 0 else None


def ensure_chain(ipt: str, chain: str) -> None:
    if run(ipt, "-S", chain).returncode != 0:
        r = run(ipt, "-N", chain)
        if r.returncode != 0 and run(ipt, "-S", chain).returncode != 0:
            raise EgressUnavailable(f"{ipt} -N {chain} failed: {r.stderr.strip()}")


def ensure_rule(ipt: str, chain: str, rule: list[str], first: bool = False) -> None:
    if run(ipt, "-C", chain, *rule).returncode == 0:
        return
    r = run(ipt, *(["-I", chain, "1"] if first else ["-A", chain]), *rule)
    if r.returncode != 0:
        raise EgressUnavailable(
            f"could not add firewall rule `{ipt} -A {chain} {' '.join(rule)}`: "
            f"{r.stderr.strip()}")


def delete_rule(ipt: str, chain: str, rule: list[str]) -> None:
    """Remove every copy of `rule` from `chain` (none left is fine)."""
    while run(ipt, "-C", chain, *rule).returncode == 0:
        if run(ipt, "-D", chain, *rule).returncode != 0:
            return


def delete_chain(ipt: str, chain: str) -> None:
    """Flush and delete `chain`; references to it must be gone first."""
    if run(ipt, "-S", chain).returncode == 0:
        run(ipt, "-F", chain)
        run(ipt, "-X", chain)


def chains(ipt: str, prefix: str) -> list[str]:
    """The user chains whose names start with `prefix`."""
    out = run(ipt, "-S").stdout
    return [line.split()[1] for line in out.splitlines()
            if line.startswith("-N ") and line.split()[1].startswith(prefix)]


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    with _thread_lock, open(LOCK_PATH, "a") as f:
        with contextlib.suppress(OSError):
            os.chmod(LOCK_PATH, 0o600)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_IMPLIED = frozenset({("-m", "tcp"), ("-m", "udp")})


def _pairs(tokens: Sequence[str]) -> frozenset[tuple[str, str]]:
    return frozenset(zip(tokens[0::2], tokens[1::2], strict=False)) - _IMPLIED


class Fence:
    """Rules (chain, rule) a running session depends on; `missing` says which are gone."""

    def __init__(self, name: str, rules: Sequence[tuple[str, list[str]]]) -> None:
        self.name = name  # what a failure calls it: "the egress fence (chain ...)"
        self._rules = [(chain, rule, _pairs(rule)) for chain, rule in rules]

    def missing(self) -> list[str]:
        """The expected rules that are no longer listed, as `CHAIN rule`; every one of
        them when iptables does not answer (a fence nobody can see is not there)."""
        ipt = shutil.which("iptables") or shutil.which("iptables", path="/usr/sbin:/sbin")
        r = run(ipt, "-S") if ipt else None
        if r is None or r.returncode != 0:
            why = r.stderr.strip() if r is not None else "not installed"
            return [f"iptables -S failed ({why})"]
        listed: dict[str, set[frozenset[tuple[str, str]]]] = {}
        for line in r.stdout.splitlines():
            tokens = line.split()
            if len(tokens) > 2 and tokens[0] == "-A":
                listed.setdefault(tokens[1], set()).add(_pairs(tokens[2:]))
        return [f"{chain} {' '.join(rule)}" for chain, rule, pairs in self._rules
                if pairs not in listed.get(chain, set())]
