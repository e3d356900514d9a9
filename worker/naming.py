"""Every identifier built from tenant and connector names: one grammar, one encoding.

A name (tenant or connector) is 1 to 63 characters of `[a-z0-9]`, with single `-` or
`_` between alphanumerics: it never starts or ends with a separator and never holds two
in a row. So `--` can never occur inside a name, and it is the joiner of every flat
identifier (RQ job ids, image repositories, queue names): splitting at `--` gives the
parts back, and `a-b`/`c` and `a`/`b-c` stay apart. Hierarchical identifiers join the
same validated parts with a character no name holds either: `:` in Redis keys, `/` in
paths. Every builder is here, and nothing else in the project joins names.

The grammar itself (`name_problem`) lives in worker/spec.py, where names are
validated, because the sandbox runtime imports that module and nothing else of the
host's. It is also what Docker accepts in a repository path component, and 63
characters keep every path component and image reference under the kernel's and the
registry's limits.
"""

from __future__ import annotations

import re

from worker.errors import ConfigError
from worker.settings import settings
from worker.spec import name_problem

SEP = "--"
# RQ's job id alphabet; refresh ids and job parts are checked against it.
_TOKEN = re.compile(r"^[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*$")


class InvalidName(ConfigError, ValueError):
    """A tenant or connector name outside the grammar."""


def check_name(kind: str, value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise InvalidName(f"invalid {kind} name {value!r}: {problem}")
    return value


def _token(kind: str, value: str) -> str:
    if not _TOKEN.match(value) or SEP in value:
        raise ValueError(f"invalid {kind} {value!r}")
    return value


def prefix() -> str:
    """The installation's key prefix (operator-chosen; tests use one each)."""
    return settings().redis_prefix


def scoped(tenant: str, connector: str) -> str:
    """The flat identity of a connector: `tenant--connector`."""
    return f"{check_name('tenant', tenant)}{SEP}{check_name('connector', connector)}"


# --- Redis ------------------------------------------------------------------------------


def redis_base(tenant: str, connector: str) -> str:
    """The root of every Redis key of one connector: `<prefix>:<tenant>:<connector>`."""
    return f"{prefix()}:{check_name('tenant', tenant)}:{check_name('connector', connector)}"


def redis_tenant_key(kind: str, tenant: str) -> str:
    """A per-tenant key such as the tenant's connector set: `<prefix>:<kind>:<tenant>`."""
    return f"{prefix()}:{kind}:{check_name('tenant', tenant)}"


# --- RQ ---------------------------------------------------------------------------------


def queue_name(tenant: str) -> str:
    """One RQ queue per tenant."""
    return redis_tenant_key("tenant", tenant)


def job_id(tenant: str, connector: str, refresh_id: str, part: str) -> str:
    """`<prefix>--run--<tenant>--<connector>--<refresh id>--<part>`: RQ allows only
    `[A-Za-z0-9_-]` in job ids, so the joiner is `--`, which no part may contain."""
    return SEP.join([_token("prefix", prefix()), "run", scoped(tenant, connector),
                     _token("refresh id", refresh_id), _token("job part", part)])


def schedule_job_id(tenant: str, connector: str) -> str:
    """The RQ job id of a connector's next scheduled refresh."""
    return SEP.join([_token("prefix", prefix()), "sched", scoped(tenant, connector)])


# --- Docker -----------------------------------------------------------------------------

LABEL_TENANT = "io.connector.tenant"
LABEL_NAME = "io.connector.name"


def image_repo(tenant: str, connector: str) -> str:
    """The image repository of a connector's code layer: `connector-<tenant>--<name>`."""
    return f"connector-{scoped(tenant, connector)}"


def labels(tenant: str, connector: str) -> dict[str, str]:
    """Docker labels naming a connector: one label per name, never a joined string."""
    return {LABEL_TENANT: check_name("tenant", tenant),
            LABEL_NAME: check_name("connector", connector)}


# --- paths ------------------------------------------------------------------------------


def path_parts(tenant: str, connector: str) -> tuple[str, str]:
    """Directory components `<tenant>/<connector>` of outputs, caches, credentials and
    local state: one directory per tenant, so an operator can mount or permission it."""
    return check_name("tenant", tenant), check_name("connector", connector)
