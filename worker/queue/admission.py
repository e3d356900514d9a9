"""Which tenants' jobs a queue worker runs.

On the Docker sandbox every tenant's code runs in a container of its own, so a worker
runs every tenant's jobs. The process sandbox isolates nothing between tenants: user
code runs as the worker's own user, with its files and network, and connectors with
the same pins share one user environment (a venv under the build cache,
worker/userenv/), which one tenant's code can change under the next. A worker on it
therefore serves the tenants `CONNECTOR_PROCESS_SANDBOX_TENANTS` names: `default` (the
tenant of a spec that names none) unless set; several names, or `*` for every tenant,
are the operator's explicit opt-in to trusting those tenants with each other.

A job of any other tenant still reaches the worker (it listens on every tenant's
queue) and fails before anything of the tenant is loaded: a permanent `limit` failure
naming the tenant and the reason, so the refresh reports it instead of waiting for a
worker that will never run it.
"""

from __future__ import annotations

from pydantic import BaseModel

from worker.errors import ConnectorError, FailureKind

SETTING = "CONNECTOR_PROCESS_SANDBOX_TENANTS"


class TenantNotServed(ConnectorError):
    """A job of a tenant this worker does not run user code for."""

    kind = FailureKind.LIMIT


class TenantPolicy(BaseModel, frozen=True):
    """The tenants a worker serves; `tenants` None: every tenant."""

    sandbox: str
    tenants: frozenset[str] | None

    @classmethod
    def for_sandbox(cls, sandbox: str, configured: tuple[str, ...]) -> TenantPolicy:
        if sandbox != "process" or "*" in configured:
            return cls(sandbox=sandbox, tenants=None)
        return cls(sandbox=sandbox, tenants=frozenset(configured))

    def check(self, tenant: str) -> None:
        """TenantNotServed unless this worker runs `tenant`'s code."""
        if self.tenants is None or tenant in self.tenants:
            return
        raise TenantNotServed(
            f"tenant '{tenant}' is not served by this worker: it runs connectors in the "
            f"process sandbox, which shares the machine and the user environments "
            f"between tenants, so it serves only {self.served()} ({SETTING}); run this "
            f"tenant on a Docker-sandbox worker, or add it to {SETTING} if its code may "
            f"share a machine with theirs")

    def served(self) -> str:
        if self.tenants is None:
            return "every tenant"
        names = ", ".join(f"'{t}'" for t in sorted(self.tenants))
        return f"tenant {names}" if len(self.tenants) == 1 else f"tenants {names}"

    def describe(self) -> str | None:
        """What the worker's log says at start on the process sandbox, or None."""
        if self.sandbox != "process":
            return None
        if self.tenants is None:
            return (f"process sandbox: serving every tenant ({SETTING}=*); user code of "
                    f"all tenants shares this machine and its user environments: trusted "
                    f"code only")
        return (f"process sandbox: serving {self.served()} only ({SETTING}); jobs of "
                f"other tenants fail")
