"""connector.lock: resolved versions recorded beside the connector and honoured by builds
(process sandbox here; Docker reads the same lock through the same wheel sets)."""

from __future__ import annotations

import pytest

from tests.helpers.sdists import backend_sdist

READ_SIX = """
import importlib.metadata
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "dist,version\\n"
    yield f"six,{importlib.metadata.version('six')}\\n"
"""


def six_version(cli, path, env: dict[str, str] | None = None) -> tuple[str, str]:
    r, s = cli.refresh(path, env=env)
    assert r.returncode == 0, r.stderr
    return str(cli.rows(path)[0]["version"]), r.stderr


def test_unpinned_requirement_warns_naming_what_it_resolved_to(connector, cli, tmp_path):
    c = connector(READ_SIX, "name: loose\npackages: [six]\n")
    # The warning comes with the resolution, i.e. the build: a fresh cache builds.
    version, stderr = six_version(cli, c, {"CONNECTOR_BUILD_CACHE": str(tmp_path / "cache")})
    needle = f"package 'six' is not pinned to one version; it resolved to six=={version}"
    assert needle in stderr, stderr


def test_lock_is_written_and_honoured(connector, cli):
    c = connector(READ_SIX, "name: locked\npackages: ['six>=1.10']\n")
    r = cli("lock", str(c))
    assert r.returncode == 0, r.stderr
    assert "connector.lock (1 distribution)" in r.stderr, r.stderr
    text = (c / "connector.lock").read_text()
    assert '# packages: ["six>=1.10"]' in text
    latest = [ln for ln in text.splitlines() if ln.startswith("six==")][0].split("==")[1]
    # An older resolution recorded in the lock wins over what the index has today.
    (c / "connector.lock").write_text(text.replace(f"six=={latest}", "six==1.16.0"))
    version, stderr = six_version(cli, c)
    assert version == "1.16.0"
    assert "not pinned" not in stderr  # a locked requirement needs no warning


def test_lock_for_other_packages_refuses_the_build(connector, cli):
    c = connector(READ_SIX, "name: stale\npackages: ['six==1.16.0']\n")
    assert cli("lock", str(c)).returncode == 0
    (c / "connector.yaml").write_text("name: stale\npackages: ['six==1.17.0']\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "connector.lock was made for packages ['six==1.16.0']" in r.stderr, r.stderr
    assert "run `connector lock` again" in r.stderr


HOSTILE_LOCK_LINES = {
    "host file": "--requirement=/etc/passwd",
    "build backend": "evil @ file://{sdist}",
    "sdist path": "{sdist}",
    "other index": "--index-url=http://127.0.0.1:9/simple",
    "extra index": "--extra-index-url=http://127.0.0.1:9/simple",
    "source builds": "--no-binary=:all:",
    "editable": "-e file://{folder}",
    "marker": 'six==1.16.0; python_version > "3"',
}


@pytest.mark.parametrize("attack", list(HOSTILE_LOCK_LINES))
def test_a_lock_holds_only_exact_versions(connector, cli, tmp_path, attack):
    """connector.lock is the tenant's file: a line that is a pip option, a path or a URL
    (which would make the host read its files, run a build backend or reach another
    index while resolving) refuses the build, naming the line; nothing of it runs."""
    marker = tmp_path / "backend-ran"
    sdist = backend_sdist(tmp_path, marker)
    c = connector(READ_SIX, "name: hostile\npackages: ['six==1.16.0']\n")
    line = HOSTILE_LOCK_LINES[attack].format(sdist=sdist, folder=c)
    (c / "connector.lock").write_text('# connector lock\n# packages: ["six==1.16.0"]\n'
                                      f"six==1.16.0\n{line}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    assert f"line 4: {line!r} is not name==version" in " ".join(r.stderr.split()), r.stderr
    r, _ = cli.refresh(c, env={"CONNECTOR_BUILD_CACHE": str(tmp_path / "cache")})
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, out
    assert f"connector.lock line 4: {line!r} is not name==version" in out, out
    assert not marker.exists(), marker.read_text()
    assert "root:" not in out  # /etc/passwd's first line
