"""`limits.network: {allow: [...]}`: what a tenant may list, refused at validation with
the entry and the reason when it would open the host, loopback, link-local/metadata or
everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE as CODE
from worker.spec import MAX_ALLOW_ENTRIES, NetworkAllow, SpecError, parse_spec

PLAIN = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "a\\n1\\n"
"""


def spec_with(allow: str) -> str:
    return f"name: x\nlimits:\n  network:\n    allow: {allow}\n"


def test_entries_parse_into_targets() -> None:
    spec = parse_spec(Path("connector.yaml"), spec_with(
        '["api.example.com:443", "10.20.0.0/16:5432", "192.168.1.7:8080", "db:5432"]'))
    network = spec.limits.network
    assert isinstance(network, NetworkAllow)
    assert [(t.host, t.port, t.is_name) for t in network.targets] == [
        ("api.example.com", 443, True), ("10.20.0.0/16", 5432, False),
        ("192.168.1.7/32", 8080, False), ("db", 5432, True)]


def test_none_and_egress_still_work() -> None:
    for value in ("none", "egress"):
        spec = parse_spec(Path("connector.yaml"), f"name: x\nlimits: {{network: {value}}}\n")
        assert spec.limits.network == value


@pytest.mark.parametrize(("entry", "reason"), [
    ("api.example.com", "give HOST:PORT"),
    ("10.0.0.1:0", "port 0 is out of range (1-65535)"),
    ("10.0.0.1:65536", "port 65536 is out of range (1-65535)"),
    ("10.0.0.1:80-90", "port ranges are not supported"),
    ("10.0.0.1:*", "not a port"),
    ("[2001:db8::1]:443", "IPv6 is not supported"),
    ("2001:db8::1:443", "IPv6 is not supported"),
    ("127.0.0.1:6379", "loopback"),
    ("localhost:6379", "loopback"),
    ("db.localhost:5432", "loopback"),
    ("169.254.169.254:80", "link-local"),
    ("169.254.0.0/16:80", "link-local"),
    ("0.0.0.0/0:443", "prefix /0 is wider than /8"),
    ("0.0.0.0:443", "unspecified"),
    ("10.0.0.0/4:443", "has host bits set"),
    ("128.0.0.0/1:443", "prefix /1 is wider than /8"),
    ("224.0.0.1:5353", "multicast"),
    ("255.255.255.255:9", "reserved"),
    ("*.example.com:443", "not a host name"),
    ("exa mple.com:443", "not a host name"),
    ("10.1.2.3/33:443", "not an IPv4 address or network"),
    ("10.0.0.1:\u0664\u0664\u0663", "not a port"),
])
def test_refused_entries_name_entry_and_reason(entry: str, reason: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(Path("connector.yaml"), spec_with(f'["{entry}"]'))
    msg = " ".join(str(e.value).split())
    assert f"limits.network.allow: {entry!r}" in msg, msg
    assert reason in msg, msg


def test_entries_are_bounded() -> None:
    many = ", ".join(f'"10.0.{i // 250}.{i % 250 + 1}:443"' for i in range(MAX_ALLOW_ENTRIES + 1))
    with pytest.raises(SpecError, match=f"at most {MAX_ALLOW_ENTRIES} entries"):
        parse_spec(Path("connector.yaml"), spec_with(f"[{many}]"))


def test_a_newline_cannot_smuggle_a_hosts_line() -> None:
    with pytest.raises(SpecError, match="not a host name"):
        parse_spec(Path("connector.yaml"), spec_with('["db\\n:443"]'))


def test_long_entries_are_refused_without_echoing_them() -> None:
    entry = "a" * 5000 + ".example.com:443"
    with pytest.raises(SpecError) as e:
        parse_spec(Path("connector.yaml"), spec_with(f'["{entry}"]'))
    assert "longer than 260 characters" in str(e.value)
    assert len(str(e.value)) < 400


def test_empty_allowlist_is_refused() -> None:
    with pytest.raises(SpecError, match="lists nothing"):
        parse_spec(Path("connector.yaml"), spec_with("[]"))


def test_validate_reports_the_bad_entry(connector, cli) -> None:
    c = connector(CODE, spec_with('["10.20.0.0/16:5432", "169.254.169.254:80"]'))
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    msg = " ".join(r.stderr.split())
    assert "limits.network.allow: '169.254.169.254:80'" in msg, r.stderr
    assert "link-local" in msg, r.stderr


def test_process_sandbox_warns_that_allow_is_not_enforced(connector, cli) -> None:
    c = connector(PLAIN, spec_with('["10.20.0.0/16:5432"]'))
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 0, r.stderr
    msg = " ".join(r.stderr.split())
    assert "limits.network.allow is not enforced by the process sandbox" in msg, r.stderr


def test_operator_bounds_where_allowlists_may_point(connector, cli) -> None:
    within = {"CONNECTOR_NETWORK_ALLOW_WITHIN": "10.20.0.0/16, 192.168.7.0/24"}
    ok = connector(CODE, spec_with('["10.20.1.0/24:5432", "192.168.7.9:80", "db:5432"]'),
                   name="ok")
    r = cli("validate", str(ok), env=within)
    assert r.returncode == 0, r.stderr
    bad = connector(CODE, spec_with('["10.20.1.0/24:5432", "10.30.0.0/16:5432"]'), name="bad")
    r = cli("validate", str(bad), env=within)
    assert r.returncode == 2, r.stdout
    msg = " ".join(r.stderr.split())
    assert ("limits.network.allow: '10.30.0.0/16:5432' is outside the networks the "
            "operator allows (10.20.0.0/16, 192.168.7.0/24; "
            "CONNECTOR_NETWORK_ALLOW_WITHIN)") in msg, r.stderr
    assert "10.20.1.0/24" not in msg
