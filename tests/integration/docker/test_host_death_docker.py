"""A container whose worker was SIGKILLed mid-read stops by itself (real engine).

`reap` removes a dead owner's containers only when another sandbox starts on the
machine; until then the container must not keep running the tenant's code. The host
here is `connector refresh --sandbox docker` (a worker opens the same sessions), killed
while read_bytes sleeps with processes it started in sessions of their own; both ways
frames cross (the session socket, the engine's attach stream) are covered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import docker
import docker.errors
import pytest

from tests.conftest import ROOT, write_connector
from tests.helpers.lingering import SPEC, lingering_code
from tests.helpers.wait import wait_until
from worker.sandbox.docker import LABEL, LABEL_OWNER

pytestmark = pytest.mark.docker

ESCAPEE = "time.sleep(600)"  # the command line of the program read_bytes starts


@pytest.mark.parametrize("link", ["socket", "attach"])
def test_a_container_stops_when_its_host_is_killed_mid_read(tmp_path, link):
    client = docker.from_env()
    # marks land in the container's own /tmp: the test watches its processes instead
    folder = write_connector(tmp_path / "c", lingering_code("/tmp", "read", escape=True),
                             SPEC.format(name="linger", extra=""))
    env = {**os.environ, "CONNECTOR_OUTPUT": str(tmp_path / "out"),
           "CONNECTOR_DOCKER_LINK": link}
    host = subprocess.Popen([sys.executable, "-m", "worker.cli", "refresh", str(folder),
                             "--sandbox", "docker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    owner = f"{socket.gethostname()}:{host.pid}"
    filters = {"label": [LABEL, f"{LABEL_OWNER}={owner}"]}
    try:
        def lingering() -> str | None:
            assert host.poll() is None, host.communicate()[1].decode()
            for c in client.api.containers(filters=filters):
                procs = client.api.top(c["Id"]).get("Processes") or []
                if any(ESCAPEE in " ".join(p) for p in procs):
                    return str(c["Id"])
            return None

        cid = wait_until(lingering, 300, "read_bytes never started its escapee",
                         interval=0.2)
        host.send_signal(signal.SIGKILL)
        host.wait()
        killed_at = time.monotonic()

        def stopped() -> dict | None:
            state = client.api.inspect_container(cid)["State"]
            return None if state["Running"] else state

        state = wait_until(stopped, 20, lambda: "the container still runs: " + str(
            client.api.top(cid).get("Processes")), interval=0.1)
        print(f"{link}: the container stopped {time.monotonic() - killed_at:.2f} s after "
              f"its host was killed (exit {state['ExitCode']})")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.pid, signal.SIGKILL)
        host.wait()
        for c in client.api.containers(all=True, filters=filters):  # this test's own
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
