"""A pinned package's code runs at build time (the import check imports it): it must run
inside the sandbox's wall, not as root with the host's whole memory, pids and time.

The hostile package is a wheel this test makes (anyone can publish one to an index) and
puts in a folder of its own that pip reads as an index (`PIP_FIND_LINKS`, as an operator
configures pip), which the build resolves pins from.
Its import reports what it can see and fails, so the build's error carries the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import docker
import pytest

from tests.helpers.wheels import index_folder, make_wheel
from worker import naming
from worker.images import ImageBuildError, build_connector_image
from worker.spec import load_connector

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PROBE = '''
import json, os

def read(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
    return "unreadable"

status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
facts = {
    "uid": os.getuid(),
    "memory": read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "pids": read("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "caps": status.get("CapEff", "?").strip(),
}
raise RuntimeError("PROBE" + json.dumps(facts) + "EBORP")
'''

HANG = "import time\ntime.sleep(10 ** 6)\n"


def hostile_connector(folder: Path, name: str, dist: str, limits: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "connector.yaml").write_text(
        f"name: {name}\ntenant: redteam3\npackages: ['{dist}==1.0']\nlimits: {limits}\n")
    (folder / "connector.py").write_text(
        "def list_objects(context, metadata):\n    return []\n\n"
        "def read_bytes(context, metadata):\n    yield b''\n")
    return folder


@pytest.fixture(scope="module")
def client():
    c = docker.from_env(timeout=600)
    yield c
    c.close()


@pytest.fixture
def index(tmp_path, monkeypatch):
    return index_folder(tmp_path / "index", monkeypatch)


def test_a_pins_import_at_build_time_runs_inside_the_sandbox_wall(client, tmp_path, index):
    cache = tmp_path / "wheels"
    make_wheel(index, "cxrt3probe", PROBE)
    folder = hostile_connector(tmp_path / "c", "probe", "cxrt3probe",
                               "{memory: 256m, pids: 64}")
    with pytest.raises(ImageBuildError) as e:
        build_connector_image(client, load_connector(folder), wheel_cache=cache)
    text = str(e.value)
    assert "'cxrt3probe==1.0'" in text and "import cxrt3probe failed" in text, text
    facts = json.loads(re.search(r"PROBE(.*?)EBORP", text).group(1))
    assert facts["uid"] == 10001, facts          # not root
    assert int(facts["caps"], 16) == 0, facts    # no capabilities
    assert int(facts["memory"]) <= 256 << 20, facts  # the connector's memory, not the host's
    assert facts["pids"] == "64", facts          # the connector's pids, not unbounded


def test_a_pin_whose_import_never_returns_fails_the_build_at_the_connectors_timeout(
        client, tmp_path, index):
    cache = tmp_path / "wheels"
    make_wheel(index, "cxrt3hang", HANG)
    folder = hostile_connector(tmp_path / "c", "hang", "cxrt3hang", "{timeout: 5}")
    with pytest.raises(ImageBuildError) as e:
        build_connector_image(client, load_connector(folder), wheel_cache=cache)
    text = str(e.value)
    assert "'cxrt3hang==1.0'" in text and "did not finish within 5 s" in text, text
    assert e.value.kind.value == "limit", e.value.kind
    # nothing of the check is left running
    left = client.containers.list(all=True, filters={"label": [
        f"{naming.LABEL_TENANT}=redteam3", f"{naming.LABEL_NAME}=hang"]})
    assert left == []


def test_a_sandbox_reports_an_import_check_over_its_limits_as_a_limit_failure(
        client, tmp_path, monkeypatch):
    # What a refresh reports: the sandbox's failure, not the builder's error. The build
    # resolves the pin from this test's own index, which holds the hostile wheel.
    from worker.models import FailureKind, FragmentFailure
    from worker.sandbox.docker import DockerSandbox
    from worker.settings import settings

    monkeypatch.setenv("CONNECTOR_BUILD_CACHE", str(tmp_path / "build"))
    settings.cache_clear()
    make_wheel(index_folder(tmp_path / "index", monkeypatch), "cxrt3slow", HANG)
    folder = hostile_connector(tmp_path / "c", "slow", "cxrt3slow", "{timeout: 5}")
    try:
        with pytest.raises(FragmentFailure) as e:
            DockerSandbox(client).image_for(load_connector(folder))
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert "did not finish within 5 s (limits.timeout)" in str(e.value), e.value
    assert e.value.kind is FailureKind.LIMIT, e.value.kind
