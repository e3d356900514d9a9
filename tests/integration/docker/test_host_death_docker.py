"""A container whose worker was SIGKILLed stops by itself (real engine).

`reap` removes a dead owner's containers only when another sandbox starts on the
machine; until then the container must not keep running the tenant's code. The host
here is `connector refresh --sandbox docker` (a worker opens the same sessions), killed
while read_bytes sleeps with processes it started in sessions of their own; both ways
frames cross (the session socket, the engine's attach stream) are covered. And a build
killed while a pinned package's import never returns (the build's import check runs it
in a container of the sandbox's wall).
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
from tests.helpers.wheels import index_folder, make_wheel
from worker.sandbox.docker import LABEL, LABEL_OWNER

pytestmark = pytest.mark.docker

ESCAPEE = "time.sleep(600)"  # the command line of the program read_bytes starts
# `docker top` runs ps in the engine's environment: an engine started with COLUMNS=80
# (a restart from a test process) cuts each command line to 32 characters, so ask ps
# for whole command lines.
WHOLE_LINES = "-ww -eo pid,args"


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
                procs = client.api.top(c["Id"], ps_args=WHOLE_LINES).get("Processes") or []
                if any(ESCAPEE in " ".join(p) for p in procs):
                    return str(c["Id"])
            return None

        cid = wait_until(lingering, 300, "read_bytes never started its escapee",
                         interval=0.2)
        host.send_signal(signal.SIGKILL)
        host.wait()
        killed_at = time.monotonic()

        state = wait_stopped(client, cid)
        print(f"{link}: the container stopped {time.monotonic() - killed_at:.2f} s after "
              f"its host was killed (exit {state['ExitCode']})")
    finally:
        clean_up(client, host, filters)


def wait_stopped(client: docker.DockerClient, cid: str) -> dict:
    def stopped() -> dict | None:
        state = client.api.inspect_container(cid)["State"]
        return None if state["Running"] else state

    return wait_until(stopped, 20, lambda: "the container still runs: " + str(
        client.api.top(cid, ps_args=WHOLE_LINES).get("Processes")), interval=0.1)


def clean_up(client: docker.DockerClient, host: subprocess.Popen, filters: dict) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(host.pid, signal.SIGKILL)
    host.wait()
    for c in client.api.containers(all=True, filters=filters):  # this test's own
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(c["Id"], force=True)


BUILD = """
import sys
from pathlib import Path
import docker
from worker.images import build_connector_image
from worker.spec import load_connector
build_connector_image(docker.from_env(timeout=600), load_connector(sys.argv[1]),
                      wheel_cache=Path(sys.argv[2]))
"""


def test_an_import_check_stops_when_its_builder_is_killed(tmp_path, monkeypatch):
    client = docker.from_env()
    cache = tmp_path / "wheels"
    make_wheel(index_folder(tmp_path / "index", monkeypatch), "cxhangup",
               "import time\ntime.sleep(10 ** 6)\n")
    folder = write_connector(tmp_path / "c", ("def list_objects(c, m):\n    return []\n\n"
                              "def read_bytes(c, m):\n    yield b''\n"),
                             "name: hangup\npackages: ['cxhangup==1.0']\n"
                             "limits: {timeout: 600}\n")
    host = subprocess.Popen([sys.executable, "-c", BUILD, str(folder), str(cache)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    owner = f"{socket.gethostname()}:{host.pid}"
    filters = {"label": [f"{LABEL}=import-check", f"{LABEL_OWNER}={owner}"]}
    try:
        def importing() -> str | None:
            assert host.poll() is None, host.communicate()[1].decode()
            running = client.api.containers(filters=filters)
            return str(running[0]["Id"]) if running else None

        cid = wait_until(importing, 600, "the import check never started", interval=0.2)
        host.send_signal(signal.SIGKILL)
        host.wait()
        wait_stopped(client, cid)
    finally:
        clean_up(client, host, filters)
