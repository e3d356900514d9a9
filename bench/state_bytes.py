"""Bytes of Redis memory one committed fragment costs (the figure behind the default of
CONNECTOR_MAX_TENANT_FRAGMENTS).

Commits N fragments through RedisState (the queue mode's state store) under a key
prefix of its own, reads MEMORY USAGE of the connector's `fragments` and `fingerprints`
hashes, and deletes them. Two shapes: typical (a 48-byte name, a 32-byte fingerprint)
and the largest a listing may bring (CONNECTOR_MAX_FRAGMENT_NAME_BYTES and
CONNECTOR_MAX_FINGERPRINT_BYTES). A running refresh holds the fragments it reads again
(its plan and staged versions) until it closes.

    python3 bench/state_bytes.py [--fragments 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import uuid

import redis

from worker.listing import Listing
from worker.models import Commit, Fragment
from worker.queue import enqueue
from worker.queue.tracker import Tracker
from worker.settings import settings
from worker.state.keys import ConnectorKeys
from worker.state.redis import RedisState


def per_fragment(r: redis.Redis, n: int, name_len: int, fp_len: int
                 ) -> tuple[float, float]:
    """(bytes a committed fragment, bytes more while a refresh reading it runs)."""
    os.environ["CONNECTOR_REDIS_PREFIX"] = "cxbench" + uuid.uuid4().hex[:8]
    settings.cache_clear()
    state = RedisState(r, "bench", "orders")
    k = ConnectorKeys("bench", "orders")
    try:
        commits = []
        for i in range(n):
            name = f"s3://bucket/orders/2026/{i:08d}/part.csv".ljust(name_len, "x")[:name_len]
            fp = (hashlib.md5(str(i).encode()).hexdigest() * (fp_len // 32 + 1))[:fp_len]
            path = (f"data/{hashlib.sha256(name.encode()).hexdigest()[:16]}-"
                    f"{uuid.uuid4().hex[:16]}.parquet")
            # the state keeps the read key: the schema tag, ':', the listed fingerprint
            commits.append(Commit(name=name, fingerprint="a1b2c3d4e5f6:" + fp, path=path,
                                  rows=1000, size=123456))
        for i in range(0, n, 2000):
            state.commit_many(commits[i:i + 2000])
        used = sum(r.memory_usage(key, samples=0) or 0
                   for key in (k.fragments, k.fingerprints))
        # A refresh that reads them all: its plan (todo, pending, batches) and staged
        # versions, until it closes.
        tr = Tracker(r, "bench", "orders", "rbench")
        listing = Listing.of(Fragment(name=c.name, fingerprint=c.fingerprint[13:])
                             for c in commits)
        tr.plan(listing, [], enqueue.split(listing.names))
        for c in commits:
            state.stage("rbench", c)
        running = sum(r.memory_usage(key, samples=0) or 0 for key in (
            k.staged("rbench"), *(k.run("rbench", part) for part in
                                  ("todo", "pending", "batches"))))
        return used / n, running / n
    finally:
        r.delete(*r.scan_iter(match=f"{k.base}:*", count=1000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fragments", type=int, default=20_000)
    args = ap.parse_args()
    r = redis.Redis.from_url(settings().redis_url)
    s = settings()
    for label, name_len, fp_len in (("typical", 48, 32),
                                    ("largest", s.max_fragment_name_bytes,
                                     s.max_fingerprint_bytes)):
        b, run = per_fragment(r, args.fragments, name_len, fp_len)
        print(f"{label:8s} name {name_len:5d} B, fingerprint {fp_len:5d} B: {b:6.0f} bytes "
              f"a fragment, {b * 1e6 / 2**30:5.2f} GiB a million; {run:6.0f} more while "
              "a refresh reading it runs")


if __name__ == "__main__":
    main()
