"""Ids built from tenant and connector names never collide, and names are bounded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from worker.spec import SpecError, load_connector

# (tenant, connector) pairs that a naive `-` or `_` join maps to the same string
COLLIDING = [
    (("a-b", "c"), ("a", "b-c")),
    (("a_b", "c"), ("a", "b_c")),
    (("x-1", "y-2"), ("x", "1-y-2")),
    (("default", "run-a"), ("default-run", "a")),
    (("sched", "a"), ("sched-a", "b")),
]


def _connector(tmp: Path, tenant: str, name: str) -> object:
    folder = tmp / f"{tenant}.{name}"
    folder.mkdir(exist_ok=True)
    (folder / "connector.py").write_text(
        "def list_objects(c, m):\n    return []\n\ndef read_bytes(c, m):\n    yield b''\n")
    (folder / "connector.yaml").write_text(f"name: {name}\ntenant: {tenant}\n")
    return load_connector(folder)


def _builders(tmp: Path) -> dict[str, Callable[[str, str], object]]:
    from worker.images import image_repo
    from worker.naming import labels
    from worker.queue.enqueue import refresh_job_ids
    from worker.registry import bundle_dir
    from worker.sink import Output
    from worker.state.keys import ConnectorKeys

    out = Output(str(tmp / "out"))
    return {
        "redis keys": lambda t, c: ConnectorKeys(t, c).deployment,
        "schedule job id": lambda t, c: ConnectorKeys(t, c).schedule_job,
        "refresh job ids": lambda t, c: tuple(refresh_job_ids(t, c, "abc123", 2)),
        "image repository": lambda t, c: image_repo(_connector(tmp, t, c)),
        "docker labels": lambda t, c: tuple(sorted(labels(t, c).items())),
        "output path": lambda t, c: out.dataset_dir(t, c),
        "bundle cache path": lambda t, c: str(bundle_dir(t, c, "d" * 64)),
    }


@pytest.mark.parametrize("first, second", COLLIDING)
def test_colliding_pairs_get_distinct_ids(tmp_path: Path, first: tuple[str, str],
                                          second: tuple[str, str]) -> None:
    for what, build in _builders(tmp_path).items():
        assert build(*first) != build(*second), (what, first, second)


@pytest.mark.parametrize("name, reason", [
    ("x" * 300, "300 characters long; the limit is 63"),
    ("x" * 64, "64 characters long; the limit is 63"),
    ("-lead", "no leading, trailing or doubled separator"),
    ("trail_", "no leading, trailing or doubled separator"),
    ("dou--ble", "no leading, trailing or doubled separator"),
    ("Upper", "1 to 63 characters of a-z"),
    ("", "1 to 63 characters of a-z"),
])
def test_bad_names_are_refused_at_validation(tmp_path: Path, name: str, reason: str) -> None:
    for field in ("name", "tenant"):
        folder = tmp_path / f"{field}-{len(name)}-{abs(hash(name))}"
        folder.mkdir()
        (folder / "connector.py").write_text(
            "def list_objects(c, m):\n    return []\n\ndef read_bytes(c, m):\n    yield b''\n")
        other = "tenant: t" if field == "name" else "name: n"
        (folder / "connector.yaml").write_text(f"{field}: '{name}'\n{other}\n")
        with pytest.raises(SpecError, match=rf"connector.yaml: {field}: .*{reason}"):
            load_connector(folder)


def test_longest_names_run_through_every_builder(tmp_path: Path) -> None:
    t, c = "t" * 63, "c" * 63
    for what, build in _builders(tmp_path).items():
        assert build(t, c), what
    assert len(_builders(tmp_path)["image repository"](t, c)) < 255


@pytest.mark.parametrize("args", [
    ("status", "x", "--tenant", "Bad/../x"),
    ("refresh", "x", "--tenant", "Bad", "--queue"),
    ("show", "x", "--tenant", "Bad"),
    ("status", "../x", "--tenant", "acme"),
    ("ceilings", "Bad"),
])
def test_bad_names_on_the_command_line_are_usage_errors(cli, args: tuple[str, ...]) -> None:
    r = cli(*args, env={"REDIS_URL": "redis://127.0.0.1:1/0"})  # never reached
    assert r.returncode == 2, r.stdout + r.stderr
    assert "invalid tenant name 'Bad" in r.stderr or "invalid connector name '../x'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("tenant", "connector"), [("t", "c"), ("sched", "fin"), ("fin", "run")])
def test_only_a_refreshs_finalize_and_its_periodic_trigger_run_platform_code_alone(
        tenant: str, connector: str) -> None:
    """The tenant running cap admits these whatever the tenant holds (worker.queue.slots);
    names that look like job parts must not turn a tenant's read into one."""
    from worker.queue.enqueue import platform_only, refresh_job_ids
    from worker.state.keys import ConnectorKeys

    ids = refresh_job_ids(tenant, connector, "abc123", 2)
    assert [platform_only(i) for i in ids] == [False, False, False, True]
    assert platform_only(ConnectorKeys(tenant, connector).schedule_job)
