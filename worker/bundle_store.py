"""Deployed bundles in Redis: stored under a per-tenant byte quota, superseded ones deleted.

A deploy stores its bundle and its deployment record in one Lua script, which also
decides what the connector keeps and counts the tenant's bytes, so concurrent deploys
cannot together pass the quota and a refused deploy changes nothing.

What a connector keeps after a deploy: the new version, the version it replaces, and
the version its refresh pin names (`ConnectorKeys.bundle_pin`: the bundle the running
refresh runs, released with the refresh lock). Every other stored version is deleted.
A refresh pins its version when it starts, before any job of it runs, and checks the
bundle is still stored after pinning (`pin`), so a refresh's jobs always find their
bundle however many deploys land meanwhile; a connector keeps at most three versions.

The quota (`Ceilings.bundle_bytes`: CONNECTOR_MAX_TENANT_BUNDLE_BYTES or the tenant's
override) bounds the sum of the tenant's kept bundles after the deploy's own deletions,
so redeploying a connector is not refused for the versions that deploy frees.

A bundle key outside the connector's `bundles` hash (stored by a deploy that did not
count bundles) is unknown to all of the above until `adopt` takes it in: counted when
something may still need it, deleted otherwise (worker/bundle_legacy.py finds them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from redis import Redis

from worker import ceilings
from worker.state import keys
from worker.state.keys import ConnectorKeys

# Both scripts keep the version the connector's deployment record (at `key`) names.
_KEEP_DEPLOYED = """
local function keep_deployed(keep, key)
  local raw = redis.call('GET', key)
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' and type(d['bundle']) == 'string' then
      keep[d['bundle']] = true
    end
  end
end
"""

# KEYS deployment, bundles, pin, tenant bytes, new bundle, tenant connectors, tenants
# ARGV data, digest, size, limit, deployment JSON, connector, tenant, bundle key prefix,
# connectors limit
# Returns {stored (1/0), bytes used before, bytes used after (or that it would be)}, or
# {-1, connectors deployed, connectors it would make} when the connector is new and the
# tenant is at its ceiling of connectors.
_PUT = _KEEP_DEPLOYED + """
if redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 0 then
  local count = redis.call('SCARD', KEYS[6])
  if count >= tonumber(ARGV[9]) then return {-1, count, count + 1} end
end
local keep = {[ARGV[2]] = true}
keep_deployed(keep, KEYS[1])
local pin = redis.call('GET', KEYS[3])
if pin then keep[pin] = true end
local stored = redis.call('HGETALL', KEYS[2])
local freed, drop = 0, {}
for i = 1, #stored, 2 do
  if not keep[stored[i]] then
    freed = freed + tonumber(stored[i + 1])
    table.insert(drop, stored[i])
  end
end
local added = 0
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then added = tonumber(ARGV[3]) end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
local after = used - freed + added
if added > 0 and after > tonumber(ARGV[4]) then return {0, used, after} end
if added > 0 then
  redis.call('SET', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
for _, digest in ipairs(drop) do
  redis.call('DEL', ARGV[8] .. digest)
  redis.call('HDEL', KEYS[2], digest)
end
redis.call('SET', KEYS[4], after)
redis.call('SET', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('SADD', KEYS[7], ARGV[7])
return {1, used, after}
"""


# KEYS bundles, deployment, pin, tenant bytes, lock
# ARGV bundle key prefix, the running refresh's id ('' none), the version it runs ('' not
# known), digests...
# Returns {bytes counted, bundles deleted}.
_ADOPT = _KEEP_DEPLOYED + """
local keep = {}
keep_deployed(keep, KEYS[2])
local pin = redis.call('GET', KEYS[3])
if pin then keep[pin] = true end
local keep_all = false
if ARGV[2] ~= '' and redis.call('GET', KEYS[5]) == ARGV[2] then
  if ARGV[3] == '' then
    keep_all = true
  else
    keep[ARGV[3]] = true
    if not pin then redis.call('SET', KEYS[3], ARGV[3]) end
  end
end
local counted, deleted = 0, 0
for i = 4, #ARGV do
  local digest = ARGV[i]
  local key = ARGV[1] .. digest
  if redis.call('HEXISTS', KEYS[1], digest) == 0 and redis.call('EXISTS', key) == 1 then
    if keep_all or keep[digest] then
      local size = redis.call('STRLEN', key)
      redis.call('HSET', KEYS[1], digest, size)
      redis.call('INCRBY', KEYS[4], size)
      counted = counted + size
    else
      redis.call('DEL', key)
      deleted = deleted + 1
    end
  end
end
return {counted, deleted}
"""


class Stored(BaseModel):
    """What a `put` did: `stored` False means refused over the quota (`over`: the bytes
    of bundles, or the count of connectors, which `used_*` and `limit` then count),
    nothing changed."""

    stored: bool
    used_before: int
    used_after: int  # or what it would have been
    limit: int
    limit_source: str
    over: Literal["bundle_bytes", "connectors"] = "bundle_bytes"


def put(redis: Redis, tenant: str, connector: str, digest: str, data: bytes,
        deployment_json: str) -> Stored:
    """Store bundle `digest` and make `deployment_json` the connector's deployment,
    unless that takes the tenant over its quota."""
    limits = ceilings.tenant_ceilings(redis, tenant)
    k = ConnectorKeys(tenant, connector)
    ok, used, after = redis.eval(
        _PUT, 7, k.deployment, k.bundles, k.bundle_pin, keys.tenant_bundle_bytes(tenant),
        k.bundle(digest), keys.tenant_connectors(tenant), keys.tenants(),
        data, digest, len(data), limits.bundle_bytes, deployment_json, connector, tenant,
        k.bundle(""), limits.connectors)
    over = "connectors" if ok == -1 else "bundle_bytes"
    return Stored(stored=ok == 1, used_before=used, used_after=after,
                  limit=getattr(limits, over), limit_source=limits.source[over], over=over)


def pin(redis: Redis, tenant: str, connector: str, digest: str) -> bool:
    """Pin `digest` for the connector's running refresh; False when that version is
    no longer stored (a deploy deleted it before the pin landed: start from the current
    deployment instead)."""
    k = ConnectorKeys(tenant, connector)
    redis.set(k.bundle_pin, digest)
    # Pinned first, then checked: a deploy after the SET keeps it; one before is seen here.
    return bool(redis.exists(k.bundle(digest)))


class Adopted(BaseModel):
    """What `adopt` did with one connector's uncounted bundles."""

    counted_bytes: int
    deleted: int


def adopt(redis: Redis, tenant: str, connector: str, digests: list[str],
          running: str = "", running_bundle: str = "") -> Adopted:
    """Take the connector's bundles `digests`, stored but not in its `bundles` hash,
    into the accounting: the current version, the pinned one and the one its running
    refresh `running` runs (`running_bundle`, pinned now if nothing is) are counted
    against the tenant; every other one is deleted. A running refresh whose version is
    not known (`running_bundle` empty) keeps them all counted: ordinary versions now,
    the next deploy keeps or deletes them as any other."""
    k = ConnectorKeys(tenant, connector)
    counted, deleted = redis.eval(
        _ADOPT, 5, k.bundles, k.deployment, k.bundle_pin, keys.tenant_bundle_bytes(tenant),
        k.lock, k.bundle(""), running, running_bundle, *digests)
    return Adopted(counted_bytes=counted, deleted=deleted)
