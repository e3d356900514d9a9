"""What a job needs from the worker process it runs in: Redis, the output, warm
sessions, the sandbox and the tenants it serves. The worker installs one; a job run
elsewhere (a plain `rq worker`, a test) gets a default built from the environment."""

from __future__ import annotations

from redis import Redis

from worker.queue.admission import TenantPolicy
from worker.queue.conn import connect
from worker.queue.sessions import SessionCache
from worker.sandbox.base import Sandbox
from worker.sandbox.choose import get_sandbox
from worker.settings import settings
from worker.sink import Output


class WorkerContext:
    def __init__(self, redis: Redis, output: Output, sandbox: Sandbox,
                 sessions: SessionCache, tenants: TenantPolicy) -> None:
        self.redis = redis
        self.output = output
        self.sandbox = sandbox
        self.sessions = sessions
        self.tenants = tenants  # whose jobs this worker runs (worker.queue.admission)

    @classmethod
    def from_env(cls, redis: Redis | None = None) -> WorkerContext:
        s = settings()
        sandbox = get_sandbox(s.sandbox)
        return cls(redis or connect(s.redis_url), Output(s.output), sandbox,
                   SessionCache(s.session_idle),
                   TenantPolicy.for_sandbox(sandbox.name, s.process_sandbox_tenants))


_current: WorkerContext | None = None


def install(ctx: WorkerContext | None) -> None:
    global _current
    _current = ctx


def current() -> WorkerContext:
    global _current
    if _current is None:
        _current = WorkerContext.from_env()
    return _current
