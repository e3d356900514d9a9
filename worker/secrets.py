"""Credentials at rest: Fernet-sealed with CONNECTOR_SECRET_KEY, or only a reference.

The key lives in the environment of the orchestrator (to seal at deploy) and of the
workers (to open before a session starts), never in Redis. A sealed token is bound to
its tenant and connector: the names are sealed with the credentials and checked when
the token is opened, so a token copied into another connector's deployment (by anyone
who can write Redis) does not open there. A reference is resolved on
the worker, and only to a file inside the connector's own directory under
CONNECTOR_CREDENTIALS_DIR: the worker's environment and other files are never read.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, ValidationError

from worker import naming
from worker.errors import ConfigError
from worker.settings import settings
from worker.spec import credentials_file_problem, read_credentials_file

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


class Sealed(BaseModel):
    """What a token holds: the credentials and the connector they were sealed for."""

    tenant: str
    connector: str
    credentials: str


def seal(plaintext: str, tenant: str, connector: str) -> str:
    f = _fernet()
    if f is None:
        raise SecretError(f"{KEY_ENV} is not set")
    sealed = Sealed(tenant=tenant, connector=connector, credentials=plaintext)
    return f.encrypt(sealed.model_dump_json().encode()).decode()


def unseal(token: str, tenant: str, connector: str) -> str:
    """The credentials in `token`, only if it was sealed for `tenant`/`connector`."""
    who = f"stored credentials of '{tenant}/{connector}'"
    f = _fernet()
    if f is None:
        raise SecretError(f"{KEY_ENV} is not set on this worker: cannot open {who}")
    try:
        raw = f.decrypt(token.encode())
    except InvalidToken:
        raise SecretError(f"{who} do not open with this {KEY_ENV}") from None
    try:
        sealed = Sealed.model_validate_json(raw)
    except ValidationError:
        # A token of another shape (sealed before tokens were bound): not trusted.
        sealed = None
    if sealed is None or (sealed.tenant, sealed.connector) != (tenant, connector):
        # Which connector it was sealed for is not said: that is another tenant's name.
        raise SecretError(f"{who} were not sealed for this connector (copied from "
                          "another deployment, or sealed by an older version): deploy "
                          "it again") from None
    return sealed.credentials


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
        return read_credentials_file(path)
    except OSError as e:
        raise SecretError(f"{who}: cannot read {CREDENTIALS_DIR_ENV}/{tenant}/{connector}/"
                          f"{file}: {e.strerror}") from None
    except ValueError as e:  # not a regular file, or too large
        raise SecretError(f"{who}: {CREDENTIALS_DIR_ENV}/{tenant}/{connector}/{file} "
                          f"{e}") from None
