"""connector.lock is the tenant's file and every line reaches pip's command line on the
host: a lock of hundreds of thousands of well-formed lines must be refused at validate,
naming the file and the limit, not become an 'Argument list too long' on the worker
(an infrastructure failure, retried) after seconds of parsing."""

from __future__ import annotations

CODE = """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n1\\n"
"""


def test_a_lock_of_too_many_lines_is_refused_naming_the_limit(connector, cli, tmp_path):
    c = connector(CODE, "name: biglock\npackages: ['six==1.16.0']\n")
    lines = "".join(f"pkg{i}==1.0\n" for i in range(300_000))
    (c / "connector.lock").write_text('# connector lock\n# packages: ["six==1.16.0"]\n'
                                      + lines)
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout + r.stderr[-2000:]
    text = " ".join(r.stderr.split())
    assert "connector.lock" in text and "at most" in text, text[-2000:]
    r, _ = cli.refresh(c, env={"CONNECTOR_BUILD_CACHE": str(tmp_path / "cache")})
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0 and "connector.lock" in out and "(user)" in out, out[-2000:]
    assert "infra" not in out, out[-2000:]
