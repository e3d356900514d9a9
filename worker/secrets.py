"""Credentials at rest: Fernet-sealed with CONNECTOR_SECRET_KEY, or only a reference.

The key lives in the environment of the orchestrator (to seal at deploy) and of the
workers (to open before a session starts), never in Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from worker.errors import ConfigError
from worker.settings import settings

KEY_ENV = "CONNECTOR_SECRET_KEY"
CREDENTIALS_DIR_ENV = "CONNECTOR_CREDENTIALS_DIR"


class SecretError(ConfigError):
    """Credentials cannot be sealed, opened or resolved."""


def _fernet() -> Fernet | None:
    key = settings().secret()
    if not key:
        return None
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise SecretError(f"{KEY_ENV} is not a valid Fernet key "
                          "(generate one with Fernet.generate_key())") from None


def can_seal() -> bool:
    return _fernet() is not None


def seal(plaintext: str) -> str:
    f = _fernet()
    if f is None:
        raise SecretError(f"{KEY_ENV} is not set")
    return f.encrypt(plaintext.encode()).decode()


def unseal(token: str) -> str:
    f = _fernet()
    if f is None:
        raise SecretError(f"{KEY_ENV} is not set on this worker: cannot open stored "
                          "credentials")
    try:
        return f.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError(f"stored credentials do not open with this {KEY_ENV}") from None


def resolve_reference(tenant: str, connector: str, env: str | None, file: str | None) -> str:
    """A credentials reference resolved where this process runs (the worker)."""
    if env is not None:
        if env not in os.environ:
            raise SecretError(f"credentials for '{tenant}/{connector}': environment "
                              f"variable {env} is not set on this worker")
        return os.environ[env]
    assert file is not None
    path = Path(file)
    if not path.is_absolute():
        base = settings().credentials_dir
        if not base:
            raise SecretError(f"credentials for '{tenant}/{connector}': relative file "
                              f"{file!r} needs {CREDENTIALS_DIR_ENV} on the worker")
        path = Path(base) / tenant / connector / file
    try:
        return path.read_text()
    except OSError as e:
        raise SecretError(f"credentials for '{tenant}/{connector}': cannot read "
                          f"{path}: {e.strerror}") from None
