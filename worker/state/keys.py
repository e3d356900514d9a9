"""Every Redis key this project writes, built in one place.

All keys start with a prefix (`cx` unless `CONNECTOR_REDIS_PREFIX` says otherwise, so
tests and several installations can share one Redis) and, except the tenant index,
with the tenant and the connector: nothing one tenant's code path builds can name
another tenant's data. The names and how they are joined come from worker/naming.py
(no name can hold a `:`). Fragment names never appear in keys; they are hash fields
and set members.
"""

from __future__ import annotations

import re

from worker import naming
from worker.naming import prefix

__all__ = ["prefix"]
_REFRESH_ID = re.compile(r"^[a-z0-9]+$")


def tenants() -> str:
    """Set of tenants that ever deployed: workers listen on their queues."""
    return f"{prefix()}:tenants"


def tenant_connectors(tenant: str) -> str:
    """Set of a tenant's deployed connector names."""
    return naming.redis_tenant_key("tenant-connectors", tenant)


def tenant_bundle_bytes(tenant: str) -> str:
    """Integer: bytes of every bundle the tenant's connectors keep stored (the quota's
    count; worker.bundle_store keeps it beside the bundles in one script)."""
    return naming.redis_tenant_key("tenant-bundle-bytes", tenant)


def bundle_accounting() -> str:
    """String: set once every stored bundle of the installation is in its tenant's
    accounting (worker.bundle_legacy); its `-lock` twin is held while that runs."""
    return f"{prefix()}:bundle-accounting"


def tenant_running(tenant: str) -> str:
    """Sorted set: id of each of the tenant's jobs a worker runs -> its lease's expiry
    (worker.queue.slots)."""
    return naming.redis_tenant_key("tenant-running", tenant)


def tenant_queue(tenant: str) -> str:
    """The RQ queue name of a tenant: one queue per tenant, dequeued round-robin."""
    return naming.queue_name(tenant)


def system_queue() -> str:
    """Always listened on, last: keeps RQ on its multi-queue path (see worker.py)."""
    return f"{prefix()}:system"


def reaper_lock() -> str:
    """Held briefly by the worker that requeues abandoned and due scheduled jobs."""
    return f"{prefix()}:reaper-lock"


def watchdog_lock() -> str:
    """Held by the worker that looks for stuck refreshes (worker.queue.watchdog)."""
    return f"{prefix()}:watchdog-lock"


class ConnectorKeys:
    """Keys of one (tenant, connector)."""

    def __init__(self, tenant: str, connector: str) -> None:
        self.tenant, self.connector = tenant, connector
        self.base = naming.redis_base(tenant, connector)

    # deployment
    @property
    def deployment(self) -> str:
        """JSON of the deployed version (worker.registry.Deployment)."""
        return f"{self.base}:deployment"

    def bundle(self, digest: str) -> str:
        """The tar.gz of a deployed folder, by content hash."""
        return f"{self.base}:bundle:{digest}"

    @property
    def bundles(self) -> str:
        """Hash: digest -> bytes of every bundle of this connector kept stored."""
        return f"{self.base}:bundles"

    @property
    def bundle_pin(self) -> str:
        """String: the digest the connector's running refresh runs (a deploy keeps it
        stored); deleted with the refresh lock."""
        return f"{self.base}:bundle-pin"

    # state (worker.state.redis.RedisState)
    @property
    def fragments(self) -> str:
        """Hash: fragment name -> Commit JSON."""
        return f"{self.base}:fragments"

    @property
    def fingerprints(self) -> str:
        """Hash: fragment name -> fingerprint; kept beside `fragments` by the same Lua
        scripts, so a refresh's diff reads plain strings instead of parsing every commit."""
        return f"{self.base}:fingerprints"

    def staged(self, refresh_id: str) -> str:
        """Hash: fragment name -> Commit JSON written by this refresh, not yet in the table."""
        if not _REFRESH_ID.match(refresh_id):
            raise ValueError(f"invalid refresh id {refresh_id!r}")
        return f"{self.base}:staged:{refresh_id}"

    @property
    def staged_index(self) -> str:
        """Set: refresh ids with staged fragment versions."""
        return f"{self.base}:staged-index"

    @property
    def pending(self) -> str:
        """String: PendingCommit JSON of the table version being committed."""
        return f"{self.base}:pending"

    @property
    def refreshes(self) -> str:
        """Hash: refresh id -> RefreshRecord JSON."""
        return f"{self.base}:refreshes"

    @property
    def refresh_index(self) -> str:
        """Sorted set: refresh id by start time."""
        return f"{self.base}:refresh-index"

    # one refresh at a time
    @property
    def lock(self) -> str:
        """String: id of the running refresh, with a TTL extended by its jobs."""
        return f"{self.base}:lock"

    @property
    def schedule_job(self) -> str:
        """The RQ job id of the next scheduled refresh (not a key of ours)."""
        return naming.schedule_job_id(self.tenant, self.connector)

    # a running refresh (worker.queue.tracker.Tracker)
    def run(self, refresh_id: str, part: str) -> str:
        if not _REFRESH_ID.match(refresh_id):
            raise ValueError(f"invalid refresh id {refresh_id!r}")
        return f"{self.base}:run:{refresh_id}:{part}"
