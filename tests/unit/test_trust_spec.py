"""What a tenant writes in connector.yaml cannot name the host's files, the host's own
settings, or resources beyond the operator's ceilings: refused at validation, with the
field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE as CODE


@pytest.mark.parametrize(("creds", "needle"), [
    ("{file: /etc/shadow}", "credentials.file: '/etc/shadow' is an absolute path"),
    ("{file: /proc/self/environ}", "credentials.file: '/proc/self/environ' is an absolute"),
    ("{file: ../../victim/vconn/secret.txt}", "'../../victim/vconn/secret.txt' leaves the"),
    ("{file: sub/../../x}", "credentials.file: 'sub/../../x' leaves the connector folder"),
    ("{env: CONNECTOR_SECRET_KEY}", "credentials.env: CONNECTOR_SECRET_KEY is one of "
                                    "connector-host's own settings"),
    ("{env: REDIS_URL}", "credentials.env: REDIS_URL is one of connector-host's own"),
])
def test_validate_refuses_credentials_outside_the_connector(connector, cli, creds: str,
                                                            needle: str) -> None:
    c = connector(CODE, f"name: x\ncredentials: {creds}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    assert needle in " ".join(r.stderr.split()), r.stderr


def test_credentials_file_linked_out_of_the_folder_is_refused(connector, cli,
                                                              tmp_path: Path) -> None:
    outside = tmp_path / "host-secret.txt"
    outside.write_text("host-only-secret")
    c = connector(CODE, "name: x\ncredentials: {file: token.txt}\n")
    (c / "token.txt").symlink_to(outside)
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 2, r.stdout
    assert "credentials.file: token.txt resolves outside the connector folder" in r.stderr
    assert "host-only-secret" not in r.stdout + r.stderr


@pytest.mark.parametrize(("limits", "needles"), [
    ("{timeout: .inf}", ["limits.timeout: Input should be a finite number"]),
    ("{timeout: .nan}", ["limits.timeout: Input should be a finite number"]),
    ("{cpus: .inf}", ["limits.cpus: Input should be a finite number"]),
    ("{memory: 1t, pids: 4000000, timeout: 1e9}",
     ["limits.memory: 1 TiB is over the operator's ceiling of 2 GiB",
      "limits.pids: 4000000 is over the operator's ceiling of 512",
      "limits.timeout: 1000000000 s is over the operator's ceiling of 3600 s"]),
    ("{cpus: 100000}", ["limits.cpus: 100000 is over the operator's ceiling of"]),
    ("{max_output_bytes: 1000t}", ["limits.max_output_bytes: 1000 TiB is over the "
                                   "operator's ceiling of 10 GiB"]),
])
def test_validate_refuses_limits_over_the_ceilings(connector, cli, limits: str,
                                                   needles: list[str]) -> None:
    c = connector(CODE, f"name: x\nlimits: {limits}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    for needle in needles:
        assert needle in " ".join(r.stderr.split()), r.stderr


def test_ceilings_are_the_operators_to_raise(connector, cli) -> None:
    c = connector(CODE, "name: x\nlimits: {memory: 3g, timeout: 7200}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2
    assert "(CONNECTOR_MAX_MEMORY)" in r.stderr and "(CONNECTOR_MAX_TIMEOUT)" in r.stderr
    r = cli("validate", str(c), env={"CONNECTOR_MAX_MEMORY": "4g",
                                     "CONNECTOR_MAX_TIMEOUT": "7200"})
    assert r.returncode == 0, r.stderr


def test_local_refresh_refuses_limits_over_the_ceilings(connector, cli) -> None:
    c = connector(CODE, "name: x\nlimits: {pids: 4000000}\n")
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 2
    assert "limits.pids: 4000000 is over the operator's ceiling of 512" in r.stderr


def alias_bomb(levels: int) -> str:
    """connector.yaml whose json defaults nest YAML aliases: ten references per level,
    so `levels` levels stand for 10**(levels+1) strings in a file of a few hundred bytes."""
    spec = ("name: bomb\nparser: {format: json}\nschema:\n"
            "  - {name: j0, type: json, default: &a0 [x, x, x, x, x, x, x, x, x, x]}\n")
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        spec += f"  - {{name: j{i}, type: json, default: &a{i} [{refs}]}}\n"
    return spec


def test_yaml_aliases_cannot_expand_a_small_spec_into_a_huge_one(connector, cli) -> None:
    """A 600-byte connector.yaml standing for ten million values (the host would build
    and serialise every one, for minutes, with gigabytes) is refused by size."""
    c = connector(CODE, alias_bomb(6))
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    assert ("connector.yaml: expands to more than 200000 values (YAML aliases repeat "
            "what they point at)") in " ".join(r.stderr.split()), r.stderr
    # aliases within reason still work
    ok = connector(CODE, alias_bomb(1), name="small")
    assert cli("validate", str(ok)).returncode == 0


def test_a_connector_py_too_big_to_parse_safely_is_refused(connector, cli) -> None:
    """The host parses connector.py (to check its functions) at validate, deploy and on
    every worker that loads a bundle, and Python's parser holds about 600 bytes per byte
    of short statements: 8 MB of `x=1` (8 KB gzipped in a bundle) took 4.7 GB. The file
    is bounded before it is parsed; data and helpers belong in other files."""
    code = CODE + "x = 1\n" * (300 * 1024 // 6)
    c = connector(code, "name: big\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    assert (f"connector.py is {len(code.encode())} bytes, over the 262144 byte limit"
            in " ".join(r.stderr.split())), r.stderr
