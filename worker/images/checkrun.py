"""The import check of a packages image, run behind the sandbox's wall.

A build imports every pinned distribution's top-level modules in the new environment
(worker/userenv/importcheck.py), so a pin that cannot import fails the build rather than
the first refresh. Importing runs the package's code, and the tenant chose the package
(anyone can publish one), so it runs as the sandbox runs user code: uid 10001, no
network, every capability dropped, no-new-privileges, the sandbox's seccomp profile, a
read-only root with a small noexec /tmp, and the connector's own memory, pids and CPU
limits and timeout. Inside `docker build` it would run as root with the host's memory,
pids and time: a fork bomb or an endless import there takes the worker host, and every
tenant on it, down. The packages image is tagged only after the check passes.

The container's stdin is this process's, attached for the check's length: a builder that
dies mid-check hangs up, and the check ends itself (worker/userenv/importcheck.py), as
it does a little after the connector's timeout in any case; a stopped container of a
dead builder is left to `reap`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import requests.exceptions

from worker import naming
from worker.errors import FailureKind
from worker.images.errors import ImageBuildError
from worker.sandbox.exits import classify_exit
from worker.sandbox.sizes import human_size
from worker.spec import Connector

if TYPE_CHECKING:
    import docker

OUTPUT_CAP = 64 << 10  # bytes of the check's output kept (it prints one line per failure)
PREFIX = "import check: "
# The check's own deadline runs this much past the connector's timeout: the builder's
# wait, started first, says "did not finish" before the check ends itself.
HANGUP_MARGIN_S = 10.0


def _collect(stream: object, out: bytearray, err: bytearray) -> None:
    with contextlib.suppress(Exception):  # the container went away: nothing more to read
        for chunk_out, chunk_err in stream:  # type: ignore[attr-defined]
            if chunk_out and len(out) < OUTPUT_CAP:
                out.extend(chunk_out[:OUTPUT_CAP - len(out)])
            if chunk_err and len(err) < OUTPUT_CAP:
                err.extend(chunk_err[:OUTPUT_CAP - len(err)])


def check_imports(client: docker.DockerClient, image: str, pins: Sequence[str],
                  connector: Connector) -> None:
    """Import every pin's modules in `image` (its /opt/user) inside the sandbox's wall;
    ImageBuildError naming the pins that do not import, or the limit the check hit."""
    if not pins:
        return
    from worker.sandbox.docker import (
        LABEL,
        LABEL_OWNER,
        SANDBOX_USER,
        TMPFS,
        USER_PYTHON,
        hardened_host_config,
        owner_id,
    )
    from worker.userenv.importcheck import HANGUP_ENV
    from worker.userenv.wheels import IMPORT_CHECK

    spec = connector.spec
    limits = spec.limits
    what = f"connector {spec.name!r}"
    api = client.api
    host_config = hardened_host_config(api, limits, network_mode="none",
                                       tmpfs={"/tmp": TMPFS})
    container = api.create_container(
        image, command=[USER_PYTHON, "-I", "-c", IMPORT_CHECK.read_text(), *pins],
        user=SANDBOX_USER, working_dir="/tmp", network_disabled=True,
        stdin_open=True,  # closed by the engine when the attach below ends (StdinOnce)
        environment={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1",
                     HANGUP_ENV: str(limits.timeout + HANGUP_MARGIN_S)},
        labels={LABEL: "import-check", LABEL_OWNER: owner_id(),
                **naming.labels(spec.tenant, spec.name)},
        host_config=host_config)
    cid = container["Id"]
    out, err = bytearray(), bytearray()
    stdin = None
    try:
        # Attached before the start, or the first lines can be lost.
        stdin = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
        stream = api.attach(cid, stdout=True, stderr=True, stream=True, demux=True)
        reader = threading.Thread(target=_collect, args=(stream, out, err), daemon=True)
        reader.start()
        api.start(cid)
        try:
            code = int(api.wait(cid, timeout=limits.timeout)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise ImageBuildError(
                f"{what}: the import check of packages {list(pins)} did not finish within "
                f"{limits.timeout:g} s (limits.timeout); a package's import must not "
                "block", kind=FailureKind.LIMIT) from None
        reader.join(timeout=5)
        oom = bool(api.inspect_container(cid)["State"].get("OOMKilled"))
    finally:
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True)
        with contextlib.suppress(Exception):
            stdin and stdin.close()
    if code == 0:
        return
    found = [ln.split(PREFIX, 1)[1] for ln in out.decode("utf-8", "replace").splitlines()
             if PREFIX in ln]
    if found and not oom:
        raise ImageBuildError(f"{what}: the environment of its packages does not import: "
                              f"{'; '.join(found)}")
    reason, kind = classify_exit("the import check", code, bytes(err), limits.memory, oom)
    raise ImageBuildError(f"{what}: the import check of packages {list(pins)} failed: "
                          f"{reason} (limits: memory {human_size(limits.memory)}, pids "
                          f"{limits.pids})", kind=kind)
