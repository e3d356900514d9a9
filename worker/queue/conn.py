"""The Redis connection of the orchestrator and the workers."""

from __future__ import annotations

import redis.exceptions
from redis import Redis

from worker.settings import settings

# What a Redis call raises while Redis is unreachable: waited out, never a job's failure.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def redis_url() -> str:
    return settings().redis_url


def connect(url: str | None = None) -> Redis:
    """Binary-safe client (RQ stores bytes); short connect timeout so a missing Redis
    is reported, not waited on; retries ride over a brief blip."""
    return Redis.from_url(url or redis_url(), socket_connect_timeout=5,
                          health_check_interval=30, retry_on_timeout=True)
