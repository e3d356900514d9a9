"""Content-addressed images against a real Docker engine (started by scripts/start-dockerd.sh).

No skipping: a missing engine is an error of these tests, not a reason to pass them.
The first run builds the base image (debootstrap, minutes); later runs reuse it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from worker.images import (
    ImageBuildError,
    base_image,
    build_connector_image,
    packages_tag,
)
from worker.spec import Connector, load_connector

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

CODE = '''\
def list_objects(context, metadata):
    yield {"name": "a", "fingerprint": "1", "is_prefix": False}


def read_bytes(context, metadata):
    yield b"x,y\\n1,2\\n"
'''


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    c = docker.from_env()
    c.ping()
    yield c
    c.close()


@pytest.fixture(scope="module")
def base(client: docker.DockerClient) -> str:
    return base_image(client)


@pytest.fixture
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache for the whole session, as in production (shared between connectors).
    return tmp_path_factory.getbasetemp() / "wheels"


def make_connector(folder: Path, name: str, packages: list[str], extra: str = "") -> Connector:
    folder.mkdir(parents=True, exist_ok=True)
    pins = "".join(f"\n  - {p!r}" for p in packages) if packages else " []"
    (folder / "connector.yaml").write_text(f"name: {name}\ntenant: test\npackages:{pins}\n")
    (folder / "connector.py").write_text(CODE + extra)
    return load_connector(folder)


def run(client: docker.DockerClient, image: str, *cmd: str) -> str:
    out = client.containers.run(image, list(cmd), remove=True, network_mode="none",
                                stdout=True, stderr=True)
    return out.decode()


def test_base_image_runs_the_runtime_as_non_root(client: docker.DockerClient, base: str) -> None:
    assert base.startswith("connector-base:")
    out = run(client, base, "python", "-c",
              "import os, sys, pyarrow, fastavro, pydantic, worker.runtime.stream;"
              # every runtime module and the Avro codec libraries are in the image
              "import cramjam, backports.zstd, worker.column_types, worker.runtime.main;"
              "print(os.getuid(), '%d.%d' % sys.version_info[:2], sys.prefix,"
              " worker.runtime.stream.__file__)")
    uid, version, prefix, path = out.split()
    assert uid == "10001"
    assert version == "3.11"
    assert prefix == "/opt/venv"
    assert path.startswith("/opt/runtime/worker/")
    # Same inputs: same tag, the same image (nothing rebuilt).
    base_id = client.images.get(base).id
    assert base_image(client) == base
    assert client.images.get(base).id == base_id


def test_build_base_on_the_command_line(cli, base: str) -> None:  # noqa: ANN001 - Cli
    r = cli("build", "--base")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == base
    r = cli("build")
    assert r.returncode == 2
    assert "give either a connector folder or --base" in r.stderr


def test_connector_image_with_packages(client: docker.DockerClient, base: str, tmp_path: Path,
                                       wheel_cache: Path) -> None:
    conn = make_connector(tmp_path / "orders", "orders", ["six==1.16.0"])
    tag = build_connector_image(client, conn, wheel_cache)
    assert tag.startswith("connector-test--orders:")
    out = run(client, tag, "/opt/user/bin/python", "-I", "-c",
              "import os, six, requests; print(six.__version__, os.getuid());"
              "print(open('/opt/connector/connector.py').read().count('def '))")
    assert out.split() == ["1.16.0", "10001", "2"]
    # The user environment does not see the runtime's packages.
    out = run(client, tag, "/opt/user/bin/python", "-I", "-c",
              "import importlib.util as u; print(u.find_spec('pyarrow'), u.find_spec('pydantic'))")
    assert out.split() == ["None", "None"]
    # The code is root-owned and not writable by the sandbox user.
    out = run(client, tag, "sh", "-c",
              "stat -c '%u %a' /opt/connector /opt/connector/connector.py;"
              " touch /opt/connector/x 2>/dev/null && echo writable || echo read-only")
    assert out.split("\n")[:3] == ["0 755", "0 644", "read-only"]
    # The wheels were copied in for the build only: they do not ship in the image.
    assert run(client, tag, "sh", "-c", "ls /tmp/wheels 2>/dev/null | wc -l").strip() == "0"

    image_id = client.images.get(tag).id
    again = build_connector_image(client, load_connector(conn.path), wheel_cache)
    assert again == tag
    assert client.images.get(again).id == image_id


def test_code_change_reuses_packages_image(client: docker.DockerClient, base: str,
                                           tmp_path: Path, wheel_cache: Path) -> None:
    conn = make_connector(tmp_path / "orders", "orders", ["six==1.16.0"])
    tag1 = build_connector_image(client, conn, wheel_cache)
    base_id = client.images.get(base).id
    pkgs = client.images.get(packages_tag(base_id, conn.spec.packages))
    pkgs_id = pkgs.id

    changed = make_connector(tmp_path / "orders", "orders", ["six==1.16.0"],
                             extra="\nVERSION = 2\n")
    tag2 = build_connector_image(client, changed, wheel_cache)
    assert tag2 != tag1
    assert tag2.split(":")[0] == tag1.split(":")[0]
    # The packages image was reused, not rebuilt: same id, and the new image sits on it.
    assert client.images.get(packages_tag(base_id, changed.spec.packages)).id == pkgs_id
    history = {layer["Id"] for layer in client.images.get(tag2).history()}
    assert pkgs_id in history
    assert "VERSION = 2" in run(client, tag2, "cat", "/opt/connector/connector.py")
    # A helper file in the folder is part of the code too.
    (tmp_path / "orders" / "helper.py").write_text("X = 1\n")
    tag3 = build_connector_image(client, load_connector(tmp_path / "orders"), wheel_cache)
    assert tag3 not in (tag1, tag2)


def test_bad_pin_raises_and_leaves_previous_image(client: docker.DockerClient, base: str,
                                                  tmp_path: Path, wheel_cache: Path) -> None:
    good = make_connector(tmp_path / "orders", "orders", [])
    good_tag = build_connector_image(client, good, wheel_cache)
    good_id = client.images.get(good_tag).id

    bad = make_connector(tmp_path / "orders", "orders", ["six==1.16.0", "nosuchpkg-zzz==1.0"])
    with pytest.raises(ImageBuildError) as e:
        build_connector_image(client, bad, wheel_cache)
    msg = str(e.value)
    assert "connector 'orders'" in msg
    assert "'nosuchpkg-zzz==1.0'" in msg
    assert "'six==1.16.0'" not in msg
    assert "No matching distribution found for nosuchpkg-zzz==1.0" in msg
    assert client.images.get(good_tag).id == good_id


def test_conflicting_pins_name_both(client: docker.DockerClient, base: str, tmp_path: Path,
                                    wheel_cache: Path) -> None:
    # Two pins of one distribution are refused when the folder loads (worker/spec.py);
    # a conflict only the resolver sees (pydantic 2.5.0 needs pydantic-core 2.14.1) is
    # the build's to name.
    bad = make_connector(tmp_path / "c", "c", ["pydantic==2.5.0", "pydantic-core==2.0.0"])
    with pytest.raises(ImageBuildError) as e:
        build_connector_image(client, bad, wheel_cache)
    msg = str(e.value)
    assert "'pydantic==2.5.0'" in msg and "'pydantic-core==2.0.0'" in msg, msg


def test_pin_of_a_runtime_package_builds_apart_from_it(client: docker.DockerClient, base: str,
                                                       tmp_path: Path, wheel_cache: Path) -> None:
    # The user's pydantic 1 lives in /opt/user; the runtime keeps its pydantic 2.
    conn = make_connector(tmp_path / "c", "c", ["pydantic==1.10.13"])
    tag = build_connector_image(client, conn, wheel_cache)
    user = run(client, tag, "/opt/user/bin/python", "-I", "-c",
               "import pydantic; print(pydantic.VERSION)")
    runtime = run(client, tag, "python", "-c", "import pydantic; print(pydantic.VERSION)")
    assert user.strip() == "1.10.13"
    assert runtime.strip().startswith("2.")


def test_sdist_only_package_is_refused(client: docker.DockerClient, base: str, tmp_path: Path,
                                       wheel_cache: Path) -> None:
    # Nothing is built from source, on the host or in the image.
    bad = make_connector(tmp_path / "c", "c", ["pyyaml==5.3.1"])  # no cp311 wheels exist
    with pytest.raises(ImageBuildError, match=r"'pyyaml==5\.3\.1' could not be resolved"):
        build_connector_image(client, bad, wheel_cache)


def test_concurrent_builds_of_one_tag_build_once(client: docker.DockerClient, base: str,
                                                 tmp_path: Path, wheel_cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import worker.images.connector as images

    builds: list[str] = []
    real = images.docker_build
    lock = threading.Lock()

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a pass-through spy
        with lock:
            builds.append(args[2])  # the tag being built
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "docker_build", counting)
    conn = make_connector(tmp_path / "racy", "racy", ["six==1.16.0"],
                          extra=f"\nNONCE = {time.time_ns()}\n")  # a tag never built before
    with ThreadPoolExecutor(3) as ex:
        tags = list(ex.map(lambda _: build_connector_image(client, conn, wheel_cache), range(3)))
    assert len(set(tags)) == 1
    assert builds.count(tags[0]) == 1  # the other two waited on the tag's lock, then found it


def test_link_out_of_the_folder_never_reaches_the_image(client: docker.DockerClient, base: str,
                                                        tmp_path: Path,
                                                        wheel_cache: Path) -> None:
    # A host file the connector's author should not be able to read from inside the sandbox.
    host_secret = tmp_path / "host-secret.txt"
    host_secret.write_text(f"host-only {time.time_ns()}\n")
    conn = make_connector(tmp_path / "leaky", "leaky", [])
    (conn.path / "leak.txt").symlink_to(host_secret)
    with pytest.raises(ImageBuildError) as e:
        tag = build_connector_image(client, load_connector(conn.path), wheel_cache)
        # Before the refusal existed, the link went into the image as a readable file.
        pytest.fail("built " + tag + ": " + run(client, tag, "cat", "/opt/connector/leak.txt"))
    msg = str(e.value)
    assert "connector 'leaky'" in msg
    assert "leak.txt" in msg and "symbolic link" in msg


def test_linked_directory_out_of_the_folder_is_refused(client: docker.DockerClient, base: str,
                                                       tmp_path: Path,
                                                       wheel_cache: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("PRIVATE\n")
    conn = make_connector(tmp_path / "dirlink", "dirlink", [])
    (conn.path / "home").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ImageBuildError, match=r"home.*symbolic link"):
        tag = build_connector_image(client, load_connector(conn.path), wheel_cache)
        pytest.fail("built " + tag + ": " + run(client, tag, "ls", "/opt/connector"))
