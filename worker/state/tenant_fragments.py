"""The tenant's fragment ceiling: how many fragments its connectors may keep in Redis.

Redis is shared by every tenant and runs `noeviction`, so what one tenant stores is
memory all the others lose. Per fragment the state keeps its name three times (a field
of `fragments` and of `fingerprints`, and inside the commit JSON), its fingerprint twice
and its file's path; while a refresh runs, its plan and staged versions hold the
fragments it reads again. A listing is capped (CONNECTOR_MAX_LISTED_FRAGMENTS, and each
name and fingerprint in bytes), so one connector's state is; the number of connectors a
tenant deploys is not, so the ceiling is the tenant's (`Ceilings.fragments`:
CONNECTOR_MAX_TENANT_FRAGMENTS, or `connector ceilings TENANT --fragments`).

It is checked when a listing arrives, before anything of it is planned: the listing
counts in place of what its connector keeps now (a refresh replaces it), the tenant's
other connectors as they keep now. A listing over it fails as a `limit`, which reads
and deletes nothing. Two connectors of one tenant listing at the same moment can pass it
together by up to one listing: exact would mean serialising a tenant's refreshes.
"""

from __future__ import annotations

from redis import Redis

from worker import ceilings
from worker.models import FailureKind, FragmentFailure
from worker.state import keys
from worker.state.keys import ConnectorKeys


def kept_by_others(redis: Redis, tenant: str, connector: str) -> int:
    """Fragments the tenant's other connectors keep in their state."""
    others = sorted(n.decode() for n in redis.smembers(keys.tenant_connectors(tenant))
                    if n.decode() != connector)
    with redis.pipeline(transaction=False) as p:
        for name in others:
            p.hlen(ConnectorKeys(tenant, name).fingerprints)
        return sum(p.execute())


def check_listing(redis: Redis, tenant: str, connector: str, listed: int) -> None:
    """FragmentFailure (limit) when a listing of `listed` fragments would take the
    tenant's state past its ceiling."""
    limits = ceilings.tenant_ceilings(redis, tenant)
    others = kept_by_others(redis, tenant, connector)
    if listed + others <= limits.fragments:
        return
    where = limits.source["fragments"]
    raise FragmentFailure(
        f"connector '{tenant}/{connector}' listed {listed:,} fragments; with the "
        f"{others:,} its tenant's other connectors keep that is {listed + others:,}, over "
        f"the tenant's ceiling of {limits.fragments:,} fragments ({where})",
        FailureKind.LIMIT)
