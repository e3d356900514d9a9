"""The project's exceptions share one base that says whose fault a failure is.

Every error the host raises on purpose derives from `ConnectorError` and carries a
`FailureKind`. Whether to retry, what exit code to give, and how to word a failure read
that kind, never a hand-kept tuple of exception types: a new exception is classified
where it is defined, once. Only `INFRA` is worth a retry: the platform failed (an engine
or Redis went away, a sandbox could not start). Everything else is permanent until
somebody changes the connector, its data or its deployment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class FailureKind(StrEnum):
    USER = "user"          # the connector's code or configuration is at fault
    DATA = "data"          # parse or schema conformance failed
    LIMIT = "limit"        # timeout, memory, output cap, an operator ceiling
    INFRA = "infra"        # sandbox could not start, engine/Redis gone: worth a retry

    @property
    def retryable(self) -> bool:
        return self is FailureKind.INFRA


class ConnectorError(Exception):
    """Base of every deliberate error. Subclasses set `kind`; an instance may override."""

    kind: ClassVar[FailureKind] = FailureKind.USER

    def __init__(self, message: str = "", *, kind: FailureKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            # Instance attribute shadows the class default for this one failure.
            self.kind = kind  # type: ignore[misc]

    def __str__(self) -> str:
        return self.message or super().__str__()

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


class InfraError(ConnectorError):
    """The platform failed, not the connector: retried with backoff."""

    kind = FailureKind.INFRA


class ConfigError(ConnectorError):
    """A connector folder, deployment or credentials reference is unusable as given."""

    kind = FailureKind.USER
