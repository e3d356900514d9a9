"""Credentials at rest: Fernet-sealed with CONNECTOR_SECRET_KEY, or only a reference.

The key lives in the environment of the orchestrator (to seal at deploy) and of the
workers (to open before a session starts), never in Redis. A reference is resolved on
the worker, and only to a file inside the connector's own directory under
CONNECTOR_CREDENTIALS_DIR: the worker's environment and other files are never read.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from worker import naming
from worker.errors import ConfigError
from worker.settings import settings
from worker.spec import credentials_file_problem

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


ENV_REFUSED = ("worker environment variables are never a credential source: seal the "
               "credentials at deploy, or reference a file under "
               f"{CREDENTIALS_DIR_ENV}/<tenant>/<connector>/ on the workers")


def resolve_reference(tenant: str, connector: str, env: str | None, file: str | None) -> str:
    """A credentials reference resolved on the worker: only a file inside
    CONNECTOR_CREDENTIALS_DIR/<tenant>/<connector>/, after following links."""
    who = f"credentials for '{tenant}/{connector}'"
    if env is not None:
        raise SecretError(f"{who}: {env}: {ENV_REFUSED}")
    assert file is not None
    problem = credentials_file_problem(file)
    if problem is not None:
        raise SecretError(f"{who}: {problem}")
    root = settings().credentials_dir
    if not root:
        raise SecretError(f"{who}: file {file!r} needs {CREDENTIALS_DIR_ENV} on the worker")
    base = Path(root).joinpath(*naming.path_parts(tenant, connector)).resolve()
    path = (base / file).resolve()
    if not path.is_relative_to(base):
        raise SecretError(f"{who}: {file} resolves outside "
                          f"{CREDENTIALS_DIR_ENV}/{tenant}/{connector}/")
    try:
        return path.read_text()
    except OSError as e:
        raise SecretError(f"{who}: cannot read {CREDENTIALS_DIR_ENV}/{tenant}/{connector}/"
                          f"{file}: {e.strerror}") from None
