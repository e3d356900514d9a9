"""connector.lock: resolved versions recorded beside the connector and honoured by builds
(process sandbox here; Docker reads the same lock through the same wheel sets)."""

from __future__ import annotations

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
