"""Stored bundles no tenant's accounting knows, taken into it once per installation.

worker/bundle_store.py counts every bundle a deploy stores against its tenant and
deletes superseded ones; a bundle key written by a deploy that did not (an installation
older than that accounting) would be neither counted nor ever deleted.
`account_stored_bundles` finds such keys with one SCAN of the installation's keys and
hands each connector's to `bundle_store.adopt`, which counts the versions something may
still need (the current one, the pinned one, the one a running refresh runs) and
deletes the rest. Then a marker key says it is done, and later calls cost one GET.

It runs when a worker starts and before every deploy, so the first of either does it. A
lock keeps two from scanning at once; a caller that finds it taken goes on without
waiting (nothing breaks while those keys are still uncounted; the holder finishes).

A refresh pins the version it runs when it starts; one started by a version without
pins has none. Its version is read from its jobs' arguments (the list job, else its
first read job) and pinned; when both are gone, every version of that connector is
kept and counted (ordinary versions from then on: the next deploy keeps or deletes
them like any other).
"""

from __future__ import annotations

import logging
import re

from redis import Redis

from worker import bundle_store, naming
from worker.state import keys
from worker.state.keys import ConnectorKeys

log = logging.getLogger(__name__)
LOCK_TTL = 600  # seconds: a scan of a large installation, with room to spare
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_GLOB = re.compile(r"([*?\[\]\\])")


def account_stored_bundles(redis: Redis) -> list[str]:
    """Take every uncounted bundle into its tenant's accounting, once per installation;
    a line per connector whose bundles changed (for the worker's log)."""
    done = keys.bundle_accounting()
    if redis.exists(done):
        return []
    lock = f"{done}-lock"
    if not redis.set(lock, "1", nx=True, ex=LOCK_TTL):
        return []
    try:
        notes = []
        for (tenant, connector), digests in sorted(_uncounted(redis).items()):
            rid, bundle = _running(redis, tenant, connector)
            r = bundle_store.adopt(redis, tenant, connector, digests, rid, bundle)
            notes.append(f"{tenant}/{connector}: {len(digests)} uncounted bundle(s): "
                         f"{r.counted_bytes} bytes now counted against the tenant, "
                         f"{r.deleted} no longer needed deleted")
        redis.set(done, "1")
        return notes
    finally:
        redis.delete(lock)


def _uncounted(redis: Redis) -> dict[tuple[str, str], list[str]]:
    """Bundle keys (`<prefix>:<tenant>:<connector>:bundle:<digest>`) missing from their
    connector's `bundles` hash."""
    head = keys.prefix() + ":"
    found: dict[tuple[str, str], list[str]] = {}
    for raw in redis.scan_iter(match=_GLOB.sub(r"\\\1", head) + "*:*:bundle:*", count=1000):
        parts = raw.decode()[len(head):].split(":")
        if len(parts) != 4 or parts[2] != "bundle" or not _DIGEST.match(parts[3]):
            continue
        tenant, connector, _, digest = parts
        try:
            naming.check_name("tenant", tenant)
            naming.check_name("connector", connector)
        except naming.InvalidName:
            continue  # not a key this project wrote
        found.setdefault((tenant, connector), []).append(digest)
    uncounted = {}
    for (tenant, connector), digests in found.items():
        counted = redis.hmget(ConnectorKeys(tenant, connector).bundles, digests)
        missing = [d for d, size in zip(digests, counted, strict=True) if size is None]
        if missing:
            uncounted[(tenant, connector)] = missing
    return uncounted


def _running(redis: Redis, tenant: str, connector: str) -> tuple[str, str]:
    """(id, version) of the connector's running refresh when it has no pin: version ''
    when its jobs no longer say; ('', '') when none runs or it is pinned."""
    k = ConnectorKeys(tenant, connector)
    rid = redis.get(k.lock)
    if rid is None or redis.exists(k.bundle_pin):
        return "", ""
    return rid.decode(), _job_bundle(redis, tenant, connector, rid.decode())


def _job_bundle(redis: Redis, tenant: str, connector: str, refresh_id: str) -> str:
    """The bundle argument of the refresh's list job, else of its first read job."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    for part in ("list", "r0"):
        try:
            job = Job.fetch(naming.job_id(tenant, connector, refresh_id, part),
                            connection=redis, serializer=JSONSerializer)
            bundle = job.args[3]
        except (NoSuchJobError, ValueError, IndexError, TypeError):
            continue
        if isinstance(bundle, str) and _DIGEST.match(bundle):
            return bundle
    return ""
