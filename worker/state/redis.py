"""Redis state: the hosted mode's StateStore, shared by every worker of a connector.

Fragments live in one hash (name -> Commit JSON), so a commit is one field write and
the committed dataset is one HGETALL. Commits and removals run as Lua scripts: Redis
executes a script atomically, so no reader ever sees half a commit and two workers
committing the same fragment serialize.
"""

from __future__ import annotations

from redis import Redis

from worker.models import Commit, PendingCommit, RefreshRecord
from worker.state.keys import ConnectorKeys
from worker.state.staged import Staged

KEEP_REFRESHES = 100

# KEYS[1] fragments hash, KEYS[2] fingerprints hash; ARGV[1] name, ARGV[2] commit
# JSON, ARGV[3] fingerprint. Returns the previous value, or false when this exact
# commit is already recorded (a retried job).
_COMMIT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return old
"""

# KEYS[1] fragments hash, KEYS[2] fingerprints hash; ARGV (name, commit JSON,
# fingerprint) triples.
_COMMIT_MANY = """
for i = 1, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
return #ARGV / 3
"""

# KEYS[1] fragments hash, KEYS[2] fingerprints hash; ARGV names. Returns the removed
# values.
_REMOVE = """
local gone = {}
for _, name in ipairs(ARGV) do
  local old = redis.call('HGET', KEYS[1], name)
  if old then
    redis.call('HDEL', KEYS[1], name)
    redis.call('HDEL', KEYS[2], name)
    table.insert(gone, old)
  end
end
return gone
"""

# KEYS[1] records hash, KEYS[2] index zset; ARGV id, started, JSON, keep.
_SAVE_REFRESH = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local keep = tonumber(ARGV[4])
local n = redis.call('ZCARD', KEYS[2])
if n > keep then
  local old = redis.call('ZRANGE', KEYS[2], 0, n - keep - 1)
  for _, id in ipairs(old) do redis.call('HDEL', KEYS[1], id) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - keep - 1)
end
return n
"""


class RedisState:
    """StateStore of one (tenant, connector) in Redis."""

    owner = "queue"

    def __init__(self, redis: Redis, tenant: str, connector: str) -> None:
        self._r = redis
        self.keys = ConnectorKeys(tenant, connector)
        self._commit = redis.register_script(_COMMIT)
        self._commit_many = redis.register_script(_COMMIT_MANY)
        self._remove = redis.register_script(_REMOVE)
        self._save = redis.register_script(_SAVE_REFRESH)

    def committed(self) -> dict[str, Commit]:
        raw = self._r.hgetall(self.keys.fragments)
        return {_text(k): Commit.model_validate_json(v) for k, v in raw.items()}

    def lookup(self, names: list[str]) -> dict[str, Commit]:
        if not names:
            return {}
        raw = self._r.hmget(self.keys.fragments, names)
        return {n: Commit.model_validate_json(v) for n, v in zip(names, raw, strict=True)
                if v is not None}

    def fingerprints(self) -> dict[str, str]:
        raw = self._r.hgetall(self.keys.fingerprints)
        return {_text(k): _text(v) for k, v in raw.items()}

    def get(self, name: str) -> Commit | None:
        raw = self._r.hget(self.keys.fragments, name)
        return None if raw is None else Commit.model_validate_json(raw)

    def commit(self, commit: Commit) -> Commit | None:
        old = self._commit(keys=[self.keys.fragments, self.keys.fingerprints],
                           args=[commit.name, commit.model_dump_json(), commit.fingerprint])
        if not old:
            return None
        previous = Commit.model_validate_json(old)
        return None if previous.path == commit.path else previous

    def commit_many(self, commits: list[Commit]) -> None:
        # One script: Redis runs it whole, so the batch lands entirely or not at all.
        args: list[str] = []
        for c in commits:
            args += [c.name, c.model_dump_json(), c.fingerprint]
        if args:
            self._commit_many(keys=[self.keys.fragments, self.keys.fingerprints], args=args)

    def remove(self, names: list[str]) -> list[Commit]:
        if not names:
            return []
        gone = self._remove(keys=[self.keys.fragments, self.keys.fingerprints], args=names)
        return [Commit.model_validate_json(v) for v in gone]

    def stage(self, refresh_id: str, commit: Commit) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.sadd(self.keys.staged_index, refresh_id)
        pipe.hset(self.keys.staged(refresh_id), commit.name, commit.model_dump_json())
        pipe.execute()

    def staged(self, refresh_id: str, names: list[str] | None = None) -> Staged:
        key = self.keys.staged(refresh_id)
        if names is None:
            docs = list(self._r.hgetall(key).values())
        else:
            docs = [v for v in self._r.hmget(key, names) if v is not None] if names else []
        return Staged.from_json(docs)

    def drop_staged(self, refresh_id: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self.keys.staged(refresh_id))
        pipe.srem(self.keys.staged_index, refresh_id)
        pipe.execute()

    def staged_refreshes(self) -> list[str]:
        return sorted(_text(x) for x in self._r.smembers(self.keys.staged_index))

    def set_pending(self, pending: PendingCommit | None) -> None:
        if pending is None:
            self._r.delete(self.keys.pending)
        else:
            self._r.set(self.keys.pending, pending.model_dump_json())

    def pending(self) -> PendingCommit | None:
        raw = self._r.get(self.keys.pending)
        return None if raw is None else PendingCommit.model_validate_json(raw)

    def save_refresh(self, record: RefreshRecord) -> None:
        self._save(keys=[self.keys.refreshes, self.keys.refresh_index],
                   args=[record.id, record.started, record.model_dump_json(), KEEP_REFRESHES])

    def refresh(self, refresh_id: str) -> RefreshRecord | None:
        raw = self._r.hget(self.keys.refreshes, refresh_id)
        return None if raw is None else RefreshRecord.model_validate_json(raw)

    def refreshes(self, limit: int = 10) -> list[RefreshRecord]:
        ids = self._r.zrevrange(self.keys.refresh_index, 0, max(0, limit - 1))
        if not ids:
            return []
        raw = self._r.hmget(self.keys.refreshes, ids)
        return [RefreshRecord.model_validate_json(v) for v in raw if v is not None]


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
