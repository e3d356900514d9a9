"""The Docker back end of the sandbox seam, against a real engine."""

from __future__ import annotations

import json
import uuid

import docker
import pytest

from tests.conftest import ROOT
from worker.sandbox.docker import LABEL, DockerSandbox
from worker.spec import load_connector

pytestmark = pytest.mark.docker

COUNTING = """
import os, time
def context(credentials):
    return {"pid": os.getpid(), "started": time.time()}
def list_objects(c, m):
    for i in range(6):
        yield {"name": f"f{i}", "fingerprint": "1"}
def read_bytes(c, m):
    yield f"frag,pid,uid\\n{m['name']},{c['pid']},{os.getuid()}\\n"
"""


@pytest.mark.parametrize("example", ["blobs", "avro_events", "jsonl_users", "custom_parser",
                                     "messy_orders"])
def test_examples_refresh_in_docker(example, cli):
    path = ROOT / "examples" / example
    r, s = cli.refresh(path, sandbox="docker")
    assert r.returncode == 0, r.stderr
    assert s["failed"] == 0 and s["read"] == s["listed"] > 0
    # same rows as the process sandbox gives
    docker_rows = cli.rows(path)
    import shutil

    shutil.rmtree(cli.output)
    cli.refresh(path, sandbox="process")
    assert sorted(map(json.dumps, cli.rows(path))) == sorted(map(json.dumps, docker_rows))


def test_warm_session_runs_context_once_as_non_root(connector, cli):
    c = connector(COUNTING, "name: warm\n")
    r, s = cli.refresh(c, "--concurrency", "1", sandbox="docker")
    assert r.returncode == 0, r.stderr
    rows = cli.rows(c)
    assert len(rows) == 6
    assert len({row["pid"] for row in rows}) == 1  # one container, one context()
    assert {row["uid"] for row in rows} == {"10001"}  # no schema: strings


def test_no_containers_left_after_refresh(connector, cli):
    # A tenant of its own: other runs on this engine start and stop sandboxes meanwhile.
    tenant = f"tidy{uuid.uuid4().hex[:8]}"
    c = connector(COUNTING, f"name: tidy\ntenant: {tenant}\n")
    r, _ = cli.refresh(c, "--concurrency", "2", sandbox="docker")
    assert r.returncode == 0, r.stderr
    client = docker.from_env()
    left = client.containers.list(all=True, filters={
        "label": [LABEL, f"io.connector.tenant={tenant}"]})
    assert left == []


def test_credentials_only_over_the_protocol(connector):
    secret = "s3cr3t-token-value-42"
    folder = connector("""
def context(credentials):
    return {"token": credentials}
def list_objects(c, m):
    yield {"name": "a", "fingerprint": "1"}
def read_bytes(c, m):
    yield "ok\\n" + ("yes" if c["token"] == "s3cr3t-token-value-42" else "no") + "\\n"
""", "name: creds\ncredentials: {file: token.txt}\n", files={"token.txt": secret})
    conn = load_connector(folder)
    box = DockerSandbox()
    session = box.open(conn, conn.read_credentials())
    try:
        client = docker.from_env()
        [container] = [c for c in client.containers.list(filters={"label": LABEL})
                       if c.labels.get("io.connector.name") == "creds"]
        assert secret not in json.dumps(container.attrs)  # env, cmd, labels, mounts
        image = client.images.get(container.attrs["Config"]["Image"])
        assert secret not in json.dumps(image.attrs)
        # the credentials file is not in the image's code layer
        out = client.containers.run(image.id, ["ls", "/opt/connector"], remove=True,
                                    network_mode="none")
        assert b"token.txt" not in out
        [fragment] = list(session.list())
        batches = list(session.read(fragment))
        assert batches[0].column("ok").to_pylist() == ["yes"]
    finally:
        session.close()


def test_build_command_and_bad_pin_keeps_previous_image(connector, cli):
    code = "def list_objects(c, m):\n    return []\ndef read_bytes(c, m):\n    yield ''\n"
    c = connector(code, "name: pinned\npackages: ['six==1.16.0']\n")
    r = cli("build", str(c))
    assert r.returncode == 0, r.stderr
    tag = r.stdout.strip().splitlines()[-1]
    assert tag.startswith("connector-default--pinned:")
    again = cli("build", str(c))
    assert again.stdout.strip().splitlines()[-1] == tag  # same inputs, same tag

    (c / "connector.yaml").write_text("name: pinned\npackages: ['six==1.16.0', "
                                      "'nosuchpkg-zzz-404==1.0']\n")
    r = cli("build", str(c))
    assert r.returncode == 1
    assert "nosuchpkg-zzz-404==1.0" in r.stderr and "could not be resolved" in r.stderr
    docker.from_env().images.get(tag)  # the previous image is still there to serve


def test_user_traceback_names_the_connectors_own_file(connector, cli):
    c = connector("def list_objects(c, m):\n    yield {'name': 'a', 'fingerprint': '1'}\n"
                  "def read_bytes(c, m):\n    raise ValueError('remote said no')\n",
                  "name: tb\n")
    r, s = cli.refresh(c, sandbox="docker")
    assert s["failed"] == 1
    assert f'File "{c / "connector.py"}", line 4, in read_bytes' in r.stderr, r.stderr
    assert "raise ValueError('remote said no')" in r.stderr  # the source line is kept
    assert "/opt/connector" not in r.stderr
