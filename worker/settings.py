"""Every environment variable the project reads, in one pydantic-settings object.

The operator configures a deployment through the environment (compose files, systemd
units, CI); the code reads it here and nowhere else, so the README's settings table and
the code cannot drift apart. Entry points (the CLI, a worker) call `settings()` once and
pass what they need down; `settings()` is cached per process, and tests that change the
environment in-process call `settings.cache_clear()`.

Names say what they hold: `CONNECTOR_BUILD_CACHE` is the image-build cache (rootfs
tarballs, wheels, build locks), `CONNECTOR_BUNDLE_CACHE` the deployed bundles a worker
unpacked. Neither defaults to a folder inside the source checkout.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_CACHE_HOME = Path.home() / ".cache" / "connector"


class Settings(BaseSettings):
    """Read from `CONNECTOR_<FIELD>` (and `REDIS_URL`); see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="CONNECTOR_", extra="ignore",
                                      frozen=True)

    # --- where things live -------------------------------------------------------------
    output: str = "./data"
    """Dataset root: a local folder or any pyarrow filesystem URI."""
    state_dir: Path = _CACHE_HOME
    """Local-mode fingerprint state (SQLite) when the output is not a local folder."""
    build_cache: Path = _CACHE_HOME / "build"
    """Image builds: debootstrap tarballs, downloaded wheels, per-tag build locks."""
    bundle_cache: Path = _CACHE_HOME / "bundles"
    """Queue workers: deployed connector bundles unpacked by content hash."""
    bundle_cache_bytes: int = Field(2 << 30, gt=0)
    """Queue workers: bytes of unpacked bundles kept under `bundle_cache`; least recently
    used versions idle longer than `session_idle` are deleted past it."""
    loaded_connectors: int = Field(32, gt=0)
    """Queue workers: connector versions one worker process keeps loaded (LRU)."""
    keep_code_images: int = Field(3, ge=1)
    """Docker workers: code images kept per connector repository on this host (most
    recently used first); older ones are removed after a build and at worker start."""
    keep_packages_images: int = Field(4, ge=0)
    """Docker workers: packages images no kept code image uses, kept on this host (most
    recently used first) for a quick rollback or a pin set coming back."""
    keep_base_images: int = Field(1, ge=0)
    """Docker workers: base images neither current nor under a kept image, kept on this
    host (most recently used first) for a worker version rolled back."""
    prune_untagged_after: int = Field(600, ge=0)
    """Docker workers: seconds before an untagged image of the project (a build stage) is
    removed, while no build runs on the host."""
    credentials_dir: Path | None = None
    """Queue workers: root of relative `credentials.file` references."""

    # --- datasets (Delta tables) -------------------------------------------------------
    retention: str = "7d"
    """`connector vacuum` keeps files any table version younger than this needs."""
    fragment_column: bool = True
    """Add `_fragment` (the row's fragment name) to every row."""
    state_batch: int = Field(5000, ge=1)
    """Staged fragment versions applied to state per transaction when a refresh commits."""
    crash_at: str | None = None
    """Tests only: end the process at this named commit step (worker.table.crash)."""

    @field_validator("retention")
    @classmethod
    def _interval(cls, v: str) -> str:
        from worker.spec import parse_interval

        parse_interval(v)
        return v

    # --- images ------------------------------------------------------------------------
    debian_mirror: str = "http://deb.debian.org/debian"
    base_from_registry: bool = False
    """Build the base image `FROM python:3.11-slim` instead of debootstrap."""
    user_base_python: Path | None = None
    """Process sandbox: the CPython 3.11 its per-connector user venvs are made from
    (default: the base interpreter of the running Python)."""

    # --- queue mode --------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6390/0",
                           validation_alias=AliasChoices("REDIS_URL", "CONNECTOR_REDIS_URL"))
    redis_prefix: str = "cx"
    """Prefix of every Redis key, so several installations (or tests) share one Redis."""
    secret_key: SecretStr | None = None
    """Fernet key sealing credentials at deploy and opening them on workers."""
    sandbox: str | None = None
    """`docker` or `process`; unset: docker when an engine answers."""
    docker_link: Literal["socket", "attach"] = "socket"
    """Docker sandbox: how frames cross to the runtime: `socket`, a private unix socket
    per session (gVisor and remote engines use `attach` whatever this says), or
    `attach`, the container's attached stdin/stdout through the engine."""
    sandbox_connect_timeout: float = Field(60.0, gt=0)
    """Docker sandbox: seconds a container's runtime may take to start and connect to
    its session socket (no user code runs before; a runtime that dies first fails at
    once)."""
    process_sandbox_tenants: Annotated[tuple[str, ...], NoDecode] = ("default",)
    """Queue workers on the process sandbox: the tenants whose jobs they run, comma-
    separated, or `*` for every tenant. That sandbox shares the machine and the user
    environments between tenants, so naming more than one is the operator's opt-in to
    trusting each with the others (worker/queue/admission.py)."""
    session_idle: float = 300.0
    """Seconds a warm sandbox session may sit idle on a worker."""
    warm_sessions: int = Field(4, gt=0)
    """Warm sandbox sessions one worker process keeps at most (least recently used out)."""
    retry_intervals: Annotated[tuple[int, ...], NoDecode] = (5, 15, 30)
    """Backoff (s) between retries of a job that failed for infrastructure reasons."""
    batch_max: int = 50
    """Most fragments in one read job."""
    heartbeat: float = 5.0
    started_ttl: int = 20
    """Lease (s) of a running job; the heartbeat renews it."""
    reap_every: float = 5.0
    watch_every: float = 15.0
    stuck_after: float = 60.0

    # --- operator ceilings on connector limits (worker/ceilings.py) --------------------
    # Unset: the defaults in worker/ceilings.py. A tenant's overrides live in Redis.
    max_memory: str | None = None
    """Largest `limits.memory` a connector may ask for (e.g. 2g)."""
    max_cpus: float | None = None
    """Largest `limits.cpus` (never more than the host's CPUs)."""
    max_timeout: float | None = None
    """Largest `limits.timeout`, seconds."""
    max_output_bytes: str | None = None
    """Largest `limits.max_output_bytes` (e.g. 10g)."""
    max_pids: int | None = None
    """Largest `limits.pids`."""
    max_tenant_bundle_bytes: str | None = None
    """Bytes of deployed bundles one tenant may keep in Redis (e.g. 512m)."""
    max_tenant_running: int | None = None
    """Most jobs of one tenant running at once while another tenant has work pending."""
    max_tenant_connectors: int | None = None
    """Most connectors one tenant may deploy."""
    max_tenant_fragments: int | None = None
    """Most fragments one tenant's connectors may keep in the (Redis) state, together."""

    network_allow_within: Annotated[tuple[str, ...] | None, NoDecode] = None
    """Comma-separated IPv4 networks every `limits.network.allow` entry (and every
    address a listed name resolves to) must fall within; unset: any the spec permits."""
    allow_bridge_pool: str = "172.31.0.0/16"
    """Docker sandbox: where the per-session networks of connectors with a
    `limits.network.allow` list get their /28s (worker/sandbox/netallow.py)."""

    @field_validator("network_allow_within", "process_sandbox_tenants", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator("network_allow_within")
    @classmethod
    def _within(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        import ipaddress

        return None if v is None else tuple(str(ipaddress.IPv4Network(p)) for p in v)

    @field_validator("process_sandbox_tenants")
    @classmethod
    def _tenants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from worker.spec import name_problem

        if not v:
            raise ValueError("names no tenant: give tenant names, or * for every tenant")
        if "*" in v and len(v) > 1:
            raise ValueError("* (every tenant) cannot be combined with names")
        for p in v:
            if p != "*" and (problem := name_problem(p)) is not None:
                raise ValueError(f"invalid tenant name {p!r}: {problem}")
        return v

    @field_validator("allow_bridge_pool")
    @classmethod
    def _pool(cls, v: str) -> str:
        import ipaddress

        if ipaddress.IPv4Network(v).prefixlen > 28:
            raise ValueError(f"{v} is smaller than one /28")
        return v

    # --- what a tenant's sandbox may bring to the host -----------------------------------
    max_listing_bytes: int = Field(64 << 20, gt=0)
    """Bytes of Arrow one listing may bring (the host holds a listing whole to diff it)."""
    max_listed_fragments: int = Field(250_000, gt=0)
    """Most fragments one listing may yield."""
    max_fragment_name_bytes: int = Field(1024, gt=0)
    """Longest fragment name (UTF-8 bytes) a listing may yield: the state keeps each name
    several times over (README: Tenant state in Redis)."""
    max_fingerprint_bytes: int = Field(1024, gt=0)
    """Longest fingerprint (UTF-8 bytes) a listing may yield."""

    @field_validator("retry_intervals", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(int(x) for x in v.split(",") if x.strip())
        return v

    def secret(self) -> str | None:
        return self.secret_key.get_secret_value() if self.secret_key else None


@functools.cache
def settings() -> Settings:
    return Settings()


def setting_problems(e: ValidationError) -> str:
    """A settings ValidationError as the operator wrote it: `VARIABLE: reason; ...`."""
    parts = []
    for err in e.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        name = "REDIS_URL" if field == "redis_url" else f"CONNECTOR_{field.upper()}"
        parts.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
