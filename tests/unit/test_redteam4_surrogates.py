"""Text from user code that is not valid Unicode: a lone surrogate in an exception
message (`ValueError("bad \\udcff")`) or in a row's value crosses the protocol as a
JSON escape, and the host's own records cannot hold it: the local refresh died with a
host traceback, and a queue job failed while saving it, retried as infra and blamed on
the platform. The host keeps such text escaped (`\\udcff`), as the terminal shows it."""

from __future__ import annotations

from tests.unit.test_redteam4_columns import ONE_ROW

CONTEXT_FAILS = """
def context(credentials):
    raise ValueError("bad \\udcff value")

def list_objects(c, m):
    yield {"name": "a", "fingerprint": "1"}

def read_bytes(c, m):
    yield "a\\n1\\n"
"""

SURROGATE_ROW = ONE_ROW.replace("ROW", '{"n": "text \\udcff"}')


def test_a_lone_surrogate_in_a_failure_is_kept_escaped(connector, cli) -> None:
    c = connector(CONTEXT_FAILS, "name: sur\n")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr.split("ValueError")[0], r.stderr
    said = " ".join(r.stderr.split())
    assert "listing failed (user)" in said and "bad \\udcff value" in said, said
    status = cli("status", str(c))
    assert status.returncode == 0, status.stderr
    assert "bad \\udcff value" in " ".join(status.stderr.split()), status.stderr


def test_a_lone_surrogate_in_a_row_fails_the_fragment_as_a_data_error(connector, cli) -> None:
    # The runtime cannot make Arrow text of it; its report quotes the value (and so the
    # surrogate), which the host then could not record.
    c = connector(SURROGATE_ROW, "name: surrow\nparser: {format: custom}\n")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert "fragment 'a' failed (data)" in said, said
    assert "\\udcff" in said, said
    status = cli("status", str(c))
    assert status.returncode == 0, status.stderr
