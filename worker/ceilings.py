"""The operator's ceilings on what a connector's `limits` may ask for.

Global ceilings come from the settings (CONNECTOR_MAX_MEMORY, CONNECTOR_MAX_CPUS,
CONNECTOR_MAX_TIMEOUT, CONNECTOR_MAX_OUTPUT_BYTES, CONNECTOR_MAX_PIDS); an operator
may override any of them for one tenant (`connector ceilings TENANT --memory 4g`,
stored in Redis). CPUs are also capped by the host's own. A connector may ask for less
than a ceiling, never more: asking more is a validation error naming the limit, the
ceiling and where it is set. `CONNECTOR_NETWORK_ALLOW_WITHIN` bounds where a
`limits.network.allow` list may point (names are checked when the worker resolves
them). Four ceilings bound the tenant rather than a connector: `bundle_bytes`
(CONNECTOR_MAX_TENANT_BUNDLE_BYTES), the bytes of deployed bundles the tenant keeps in
Redis, and `connectors` (CONNECTOR_MAX_TENANT_CONNECTORS), how many connectors it
deploys, both enforced at deploy by worker.bundle_store; `running`
(CONNECTOR_MAX_TENANT_RUNNING), the tenant's jobs running at once while another tenant
has work pending, enforced by the workers (worker.queue.slots); `fragments`
(CONNECTOR_MAX_TENANT_FRAGMENTS), the fragments its connectors keep in the Redis state
together, enforced when a listing arrives (worker.state.tenant_fragments). The limits
check runs at validate, at deploy and on the worker before it opens a session for a
deployed version, so a ceiling lowered after a deploy holds too.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker import naming
from worker.errors import ConfigError, FailureKind
from worker.settings import settings
from worker.spec import SPEC_FILE, Connector, Limits, NetworkAllow, SpecError, parse_size

if TYPE_CHECKING:
    from redis import Redis  # only passed in: the local CLI never loads the Redis client

# limit -> its global ceiling in worker/settings.py (read from CONNECTOR_<NAME>)
SETTING = {
    "memory": "max_memory",
    "cpus": "max_cpus",
    "timeout": "max_timeout",
    "max_output_bytes": "max_output_bytes",
    "pids": "max_pids",
    "bundle_bytes": "max_tenant_bundle_bytes",
    "running": "max_tenant_running",
    "connectors": "max_tenant_connectors",
    "fragments": "max_tenant_fragments",
}
ENV = {field: f"CONNECTOR_{name.upper()}" for field, name in SETTING.items()}
SIZES = ("memory", "max_output_bytes", "bundle_bytes")
# The ceilings on a connector's `limits` (the rest bound the tenant as a whole).
LIMITS = ("memory", "cpus", "timeout", "max_output_bytes", "pids")


def host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Ceilings(BaseModel):
    """Upper bounds on Limits; `source` says where each one was set (for messages)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory: int = Field(default=2 << 30, gt=0)
    cpus: float = Field(default_factory=lambda: float(host_cpus()), gt=0,
                        allow_inf_nan=False)
    timeout: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    max_output_bytes: int = Field(default=10 << 30, gt=0)
    pids: int = Field(default=512, gt=0)
    bundle_bytes: int = Field(default=512 << 20, gt=0)
    running: int = Field(default=4, gt=0)
    connectors: int = Field(default=100, gt=0)
    fragments: int = Field(default=1_000_000, gt=0)
    source: dict[str, str] = Field(default_factory=lambda: dict(ENV))

    @field_validator("memory", "max_output_bytes", "bundle_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("cpus")
    @classmethod
    def _host(cls, v: float) -> float:
        # Never more than the host has, whatever the operator wrote.
        return min(v, float(host_cpus()))

    def override(self, values: dict[str, str], source: str) -> Ceilings:
        merged = {**self.model_dump(), **values,
                  "source": {**self.source, **{k: source for k in values}}}
        return Ceilings.model_validate(merged)


class CeilingError(ConfigError):
    """An operator's ceiling value that is not valid."""


class OverCeiling(SpecError):
    """A connector asks for more than a ceiling allows."""

    kind = FailureKind.LIMIT


def _validated(base: Ceilings, values: dict[str, str], source: str) -> Ceilings:
    unknown = sorted(set(values) - set(ENV))
    if unknown:
        raise CeilingError(f"{source}: unknown ceiling(s) {', '.join(unknown)}; "
                           f"known: {', '.join(ENV)}")
    try:
        return base.override(values, source)
    except (ValidationError, ValueError) as e:
        raise CeilingError(f"{source}: {e}") from None


def global_ceilings() -> Ceilings:
    s = settings()
    values = {field: str(v) for field, name in SETTING.items()
              if (v := getattr(s, name)) is not None}
    return _validated(Ceilings(), values, "environment")


def _key(tenant: str) -> str:
    return naming.redis_tenant_key("ceilings", tenant)


def tenant_overrides(redis: Redis, tenant: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(_key(tenant)).items()}


def tenant_ceilings(redis: Redis, tenant: str) -> Ceilings:
    """The global ceilings with this tenant's overrides applied."""
    source = f"tenant override (connector ceilings {tenant})"
    return _validated(global_ceilings(), tenant_overrides(redis, tenant), source)


def set_tenant_ceilings(redis: Redis, tenant: str, values: dict[str, str],
                        reset: bool = False) -> Ceilings:
    """Store overrides for one tenant (validated first); `reset` drops the old ones."""
    current = {} if reset else tenant_overrides(redis, tenant)
    merged = {**current, **values}
    result = _validated(global_ceilings(), merged, f"ceilings of tenant '{tenant}'")
    with redis.pipeline(transaction=True) as p:
        p.delete(_key(tenant))
        if merged:
            p.hset(_key(tenant), mapping=merged)
        p.execute()
    return result


def show(field: str, value: float) -> str:
    if field in SIZES:
        for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
            if value >= 1 << shift:
                v = value / (1 << shift)
                return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
        return f"{int(value)} B"
    text = f"{int(value)}" if value == int(value) else f"{value:g}"
    return f"{text} s" if field == "timeout" else text


def problems(limits: Limits, ceilings: Ceilings) -> list[str]:
    """One `limits.<field>: ...` line per limit above its ceiling."""
    out = []
    for field in LIMITS:
        asked, ceiling = getattr(limits, field), getattr(ceilings, field)
        if asked > ceiling:
            where = ceilings.source[field]
            if field == "cpus":
                where = f"{where}; never more than the host's {host_cpus()} CPU(s)"
            out.append(f"limits.{field}: {show(field, asked)} is over the operator's "
                       f"ceiling of {show(field, ceiling)} ({where})")
    return out


def outside_operator_networks(net: ipaddress.IPv4Network) -> str | None:
    """Why `net` may not be allowed under CONNECTOR_NETWORK_ALLOW_WITHIN, or None."""
    within = settings().network_allow_within
    if within is None or any(net.subnet_of(ipaddress.IPv4Network(w)) for w in within):
        return None
    return (f"outside the networks the operator allows ({', '.join(within)}; "
            "CONNECTOR_NETWORK_ALLOW_WITHIN)")


def network_problems(limits: Limits) -> list[str]:
    """One line per allowlist address or network outside the operator's bound."""
    if not isinstance(limits.network, NetworkAllow):
        return []
    out = []
    for t in limits.network.targets:
        if not t.is_name and (why := outside_operator_networks(ipaddress.IPv4Network(t.host))):
            out.append(f"limits.network.allow: {t.entry!r} is {why}")
    return out


def enforce(connector: Connector, ceilings: Ceilings) -> None:
    """OverCeiling naming every limit of `connector` above `ceilings` (and every
    allowlist entry outside the operator's networks)."""
    found = problems(connector.spec.limits, ceilings) + network_problems(connector.spec.limits)
    if found:
        spec = connector.path / SPEC_FILE
        raise OverCeiling("\n".join(f"{spec}: {p}" for p in found))
