"""The orchestrator's API for one tenant: deploy, refresh, follow, read, inspect.

Every call is scoped to the tenant the client was made for: names are looked up under
that tenant's keys only, so another tenant's connector is simply "not deployed" here.
The CLI is a thin layer over this class.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis.exceptions
from redis import Redis

from worker.models import Commit, RefreshRecord
from worker.queue.enqueue import RefreshHandle, arm_schedule, start_refresh
from worker.queue.tracker import Tracker
from worker.registry import Deployment, deploy, get_deployment
from worker.sink import Output
from worker.state.redis import RedisState
from worker.table.delta import DeltaDataset


class TenantClient:
    def __init__(self, redis: Redis, tenant: str) -> None:
        self.redis = redis
        self.tenant = tenant

    def deploy(self, folder: str | os.PathLike[str], credentials_ref: bool = False) -> Deployment:
        d = deploy(self.redis, folder, credentials_ref, tenant=self.tenant)
        arm_schedule(self.redis, d)
        return d

    def deployment(self, name: str) -> Deployment:
        return get_deployment(self.redis, self.tenant, name)

    def state(self, name: str) -> RedisState:
        self.deployment(name)  # NotDeployed unless this tenant deployed `name`
        return RedisState(self.redis, self.tenant, name)

    def refresh(self, name: str) -> RefreshHandle:
        return start_refresh(self.redis, self.tenant, name)

    def record(self, name: str, refresh_id: str) -> RefreshRecord | None:
        """The refresh as it stands; a running one carries live counts."""
        record = self.state(name).refresh(refresh_id)
        if record is None or record.status != "running":
            return record
        tr = Tracker(self.redis, self.tenant, name, refresh_id)
        c = tr.counts()
        s = record.summary
        c.apply(s)
        s.failures = tr.failures()
        return record

    def wait(self, name: str, refresh_id: str,
             on_progress: Callable[[int, int], None] | None = None,
             poll: float = 0.25, timeout: float | None = None) -> RefreshRecord:
        """Follow a refresh until it closes, riding over Redis blips.
        `on_progress(done, total)`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                record = self.record(name, refresh_id)
                if record is not None and record.status != "running":
                    return record
                if record is not None and on_progress and record.summary.listed:
                    c = Tracker(self.redis, self.tenant, name, refresh_id).counts()
                    total = record.summary.listed - record.summary.skipped
                    on_progress(c.read + c.failed + c.unread, total)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                time.sleep(1)  # a Redis blip: keep following once it is back
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"refresh {refresh_id} still running")
            time.sleep(poll)

    def refreshes(self, name: str, limit: int = 10) -> list[RefreshRecord]:
        out = []
        for r in self.state(name).refreshes(limit):
            live = self.record(name, r.id) if r.status == "running" else r
            out.append(live or r)
        return out

    def committed(self, name: str) -> dict[str, Commit]:
        return self.state(name).committed()

    def dataset(self, name: str, output: Output) -> DeltaDataset:
        """The connector's Delta table (NotDeployed unless this tenant deployed `name`)."""
        self.deployment(name)
        return DeltaDataset.of(output, self.tenant, name)
