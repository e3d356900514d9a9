"""Deployed connectors: a tenant's connector versions stored in Redis.

`deploy` packs a folder (spec + content-hashed bundle, credentials sealed or only
referenced) for its tenant; workers `materialize` a deployment back into a folder on
local disk and resolve its credentials. Plaintext credentials never reach Redis.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError
from redis import Redis

from worker import bundle_cache, bundle_legacy, bundle_store, ceilings, naming, secrets
from worker.bundle import BundleError, make_bundle, unpack_bundle
from worker.errors import ConfigError
from worker.settings import settings
from worker.spec import Connector, ConnectorSpec, load_connector
from worker.state import keys
from worker.state.keys import ConnectorKeys
from worker.userenv.lock import locked_requirements
from worker.userenv.wheels import check_pins


class DeployError(ConfigError):
    """A deployment cannot be stored or is incomplete (e.g. its bundle is missing)."""


class OverBundleQuota(DeployError):
    """A deploy would take its tenant's stored bundles over the tenant's quota."""


class OverConnectorCeiling(DeployError):
    """A deploy of a new connector would take its tenant past its ceiling of connectors."""


class NotDeployed(ConfigError, LookupError):
    def __init__(self, tenant: str, name: str) -> None:
        super().__init__(f"no connector '{tenant}/{name}' is deployed")


class StoredCredentials(BaseModel):
    """Exactly one of: a Fernet token, or a reference resolved on the worker."""

    sealed: str | None = None
    env: str | None = None
    file: str | None = None


class Deployment(BaseModel):
    tenant: str
    name: str
    bundle: str  # sha256 of the tar.gz: the version
    spec: ConnectorSpec
    credentials: StoredCredentials | None = None
    deployed_at: float


def _credentials(connector: Connector, credentials_ref: bool) -> StoredCredentials | None:
    declared = connector.spec.credentials
    if declared is None:
        return None
    who = f"'{connector.spec.tenant}/{connector.spec.name}'"
    if credentials_ref:
        if declared.env is not None:
            raise DeployError(f"{who}: credentials.env cannot be stored as a reference: "
                              f"{secrets.ENV_REFUSED} (deploy without --credentials-ref "
                              f"to seal {declared.env}'s value from this machine)")
        return StoredCredentials(file=declared.file)
    if not secrets.can_seal():
        # --credentials-ref is offered only where it works: env references are refused.
        ref = ("" if declared.file is None else
               "; or pass --credentials-ref to store only the file reference, read on the "
               f"workers from CONNECTOR_CREDENTIALS_DIR/{connector.spec.tenant}/"
               f"{connector.spec.name}/{declared.file}")
        raise DeployError(f"{secrets.KEY_ENV} is not set: refusing to store credentials "
                          f"for {who} (set it to a Fernet key, the same on every worker: "
                          "python -c 'from cryptography.fernet import Fernet; "
                          f"print(Fernet.generate_key().decode())'{ref})")
    plaintext = connector.read_credentials()  # SpecError names what is missing
    assert plaintext is not None
    return StoredCredentials(sealed=secrets.seal(plaintext, connector.spec.tenant,
                                                 connector.spec.name))


def deploy(redis: Redis, folder: str | os.PathLike[str], credentials_ref: bool = False,
           tenant: str | None = None) -> Deployment:
    """Store the folder's connector for its tenant; returns the deployment. `tenant`:
    the tenant deploying, checked against the spec this deploy read (the folder is read
    once for its spec: a check on an earlier read could be raced by a writer)."""
    connector = load_connector(folder)
    spec = connector.spec
    if tenant is not None and spec.tenant != tenant:
        raise DeployError(f"{folder}: connector belongs to tenant '{spec.tenant}', "
                          f"not '{tenant}'")
    ceilings.enforce(connector, ceilings.tenant_ceilings(redis, spec.tenant))
    locked_requirements(connector)  # a broken or stale connector.lock: refused now
    try:
        check_pins(connector)  # a pin no worker could install
    except ConfigError as e:
        raise DeployError(f"{e}; nothing was deployed") from None
    exclude = []
    if spec.credentials and spec.credentials.file:
        exclude.append(connector.path / spec.credentials.file)
    stored = _credentials(connector, credentials_ref)
    data, digest = make_bundle(connector.path, exclude)
    d = Deployment(tenant=spec.tenant, name=spec.name, bundle=digest, spec=spec,
                   credentials=stored, deployed_at=time.time())
    bundle_legacy.account_stored_bundles(redis)  # once per installation: then one GET
    r = bundle_store.put(redis, spec.tenant, spec.name, digest, data,
                         d.model_dump_json(by_alias=True))
    if not r.stored:
        env = ceilings.ENV[r.over]
        where = env if r.limit_source in (env, "environment") else r.limit_source
        if r.over == "connectors":
            raise OverConnectorCeiling(
                f"tenant '{spec.tenant}' has {r.used_before} connectors deployed; deploying "
                f"'{spec.tenant}/{spec.name}' would make {r.used_after}, over its ceiling of "
                f"{r.limit} ({where}); nothing was changed")
        raise OverBundleQuota(
            f"tenant '{spec.tenant}' stores {r.used_before} bytes of deployed bundles; "
            f"deploying '{spec.tenant}/{spec.name}' ({len(data)} bytes) would bring it to "
            f"{r.used_after}, over the limit of {r.limit} bytes ({where}); nothing was "
            "changed")
    return d


def get_deployment(redis: Redis, tenant: str, name: str) -> Deployment:
    raw = redis.get(ConnectorKeys(tenant, name).deployment)
    if raw is None:
        raise NotDeployed(tenant, name)
    try:
        d = Deployment.model_validate_json(raw)
    except ValidationError as e:
        # Stored under older rules (or forged): today's rules hold for what runs.
        why = "; ".join(f"{'.'.join(str(p) for p in x['loc'])}: "
                        f"{x['msg'].removeprefix('Value error, ')}" for x in e.errors())
        raise DeployError(f"stored deployment of '{tenant}/{name}' is not valid (deploy "
                          f"it again): {why}") from None
    if (d.tenant, d.name) != (tenant, name):
        # Credentials are opened, references resolved, for the names the record holds:
        # they must be this key's (a record copied from another key is refused).
        raise DeployError(f"stored deployment of '{tenant}/{name}' names another "
                          "connector: deploy it again")
    return d


def known_tenants(redis: Redis) -> list[str]:
    return sorted(t.decode() for t in redis.smembers(keys.tenants()))


def cache_dir() -> Path:
    return settings().bundle_cache


def bundle_dir(tenant: str, name: str, digest: str) -> Path:
    """Where this machine keeps version `digest` of a connector, unpacked."""
    return cache_dir().joinpath(*naming.path_parts(tenant, name), digest)


def materialize(redis: Redis, tenant: str, name: str, digest: str) -> Connector:
    """The deployed version `digest` as a loaded connector folder on this machine."""
    k = ConnectorKeys(tenant, name)
    folder = bundle_dir(tenant, name, digest)
    if not folder.is_dir():
        data = redis.get(k.bundle(digest))
        if data is None:
            raise DeployError(f"bundle {digest[:12]} of '{tenant}/{name}' is missing")
        unpack_bundle(data, digest, folder.parent)  # BundleError: unsafe or damaged
        s = settings()
        bundle_cache.prune(cache_dir(), s.bundle_cache_bytes, folder, s.session_idle)
    bundle_cache.touch(folder)
    connector = load_connector(folder)
    spec = connector.spec
    if (spec.tenant, spec.name) != (tenant, name):
        # Outputs, labels and images are named from the spec: it must be this key's.
        raise BundleError(f"bundle {digest[:12]} of '{tenant}/{name}' holds connector "
                          f"'{spec.tenant}/{spec.name}'")
    return connector


def open_credentials(d: Deployment) -> str | None:
    c = d.credentials
    if c is None:
        return None
    if c.sealed is not None:
        return secrets.unseal(c.sealed, d.tenant, d.name)
    return secrets.resolve_reference(d.tenant, d.name, c.env, c.file)
