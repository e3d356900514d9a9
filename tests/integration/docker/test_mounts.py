"""`--mount HOST:CONTAINER`: a host folder a connector reads during development,
read-only, in `connector test` and a local `refresh`; never in queue mode."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker

CODE = """
import os
def list_objects(c, m):
    for name in sorted(os.listdir("/data")):
        yield {"name": name, "fingerprint": str(os.path.getmtime(f"/data/{name}"))}
def read_bytes(c, m):
    try:
        open("/data/written-by-connector", "w").close()
        wrote = "yes"
    except OSError as e:
        wrote = type(e).__name__
    yield "n,wrote\\n"
    with open(f"/data/{m['name']}") as f:
        for line in f.read().split()[1:]:
            yield f"{line},{wrote}\\n"
"""


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "hostdata"
    data.mkdir()
    (data / "a.csv").write_text("n\n1\n2\n")
    return data


def test_docker_reads_a_mounted_folder_read_only(connector, cli, folder):
    c = connector(CODE, "name: mounted\n")
    r, s = cli.refresh(c, "--mount", f"{folder}:/data", sandbox="docker")
    assert r.returncode == 0, r.stderr
    rows = cli.rows(c)
    assert sorted(str(row["n"]) for row in rows) == ["1", "2"]
    assert {row["wrote"] for row in rows} == {"OSError"}  # read-only: EROFS
    assert not (folder / "written-by-connector").exists()


def test_without_a_mount_the_folder_is_not_there(connector, cli, folder):
    c = connector(CODE, "name: unmounted\n")
    r, _ = cli.refresh(c, sandbox="docker")
    assert r.returncode == 1
    assert "FileNotFoundError" in r.stderr and "/data" in r.stderr, r.stderr


def test_mount_refused_in_queue_mode(cli, folder):
    r = cli("refresh", "mounted", "--tenant", "t", "--queue", "--mount", f"{folder}:/data")
    assert r.returncode == 2
    assert "--mount is for local runs only" in r.stderr, r.stderr


@pytest.mark.parametrize("spec, needle", [
    ("{folder}:/opt/connector", "/opt/connector is reserved"),
    ("{folder}://opt", "/opt is reserved"),  # POSIX keeps a leading '//'; Docker does not
    ("{folder}:/data/../..//opt/runtime", "/opt/runtime is reserved"),
    ("{folder}:data", "the container path must be absolute"),
    ("/no/such/dir:/data", "/no/such/dir does not exist"),
])
def test_bad_mounts_are_named(connector, cli, folder, spec, needle):
    c = connector(CODE, "name: bad\n")
    r = cli("test", str(c), "--sandbox", "docker", "--mount", spec.format(folder=folder))
    assert r.returncode == 2
    assert needle in r.stderr, r.stderr


def test_process_sandbox_mounts_only_at_the_same_path(connector, cli, folder):
    c = connector(CODE.replace("/data", str(folder)), "name: proc\n")
    r = cli("test", str(c), "--sandbox", "process", "--mount", f"{folder}:/data")
    assert r.returncode == 2
    assert "the process sandbox sees this machine's files as they are" in r.stderr
    r = cli("test", str(c), "--sandbox", "process", "--mount", f"{folder}:{folder}")
    assert r.returncode == 0, r.stderr


def test_an_empty_listing_in_docker_says_host_folders_need_a_mount(connector, cli, folder):
    """A connector that globs a host folder lists nothing in a container (the folder is
    not there, and a glob does not raise): `connector test` says why that may be."""
    code = f"""
from pathlib import Path
def list_objects(c, m):
    for p in sorted(Path({str(folder)!r}).glob("*.csv")):
        yield {{"name": p.name, "fingerprint": "1"}}
def read_bytes(c, m):
    yield b""
"""
    c = connector(code, "name: globbed\n")
    r = cli("test", str(c), "--sandbox", "docker")
    assert r.returncode == 0, r.stderr
    assert "0 fragment(s)" in r.stdout, r.stdout
    said = " ".join(r.stderr.split())
    assert "list_objects yielded no fragments" in said, said
    assert "--mount HOST:CONTAINER" in said, said
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 0 and "a.csv" in r.stdout, r.stdout + r.stderr
    assert "--mount" not in r.stderr, r.stderr


def test_infer_reads_a_mounted_folder(connector, cli, folder):
    """What `test` and `refresh` read with --mount, `infer` reads too."""
    c = connector(CODE, "name: inferred\n")
    r = cli("infer", str(c), "--sandbox", "docker", "--mount", f"{folder}:/data")
    assert r.returncode == 0, r.stderr
    assert '{name: "n", type: int64' in r.stdout, r.stdout
