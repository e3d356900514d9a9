"""The user process, apart from the runtime (process sandbox; Docker runs the same code).

The connector's code runs in its own environment (the default packages, no pins here):
it cannot import the project's stack, its custom rows cross to the runtime in batches
(datetimes and Decimals included), and what it does to its own process stays a user
error with a clear message.
"""

from __future__ import annotations

LIST_ONE = """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
"""


def test_user_code_sees_its_environment_not_the_runtimes(connector, cli):
    c = connector(LIST_ONE + """
import importlib.util, sys
def read_bytes(c, m):
    yield "module,found\\n"
    for name in ("pyarrow", "fastavro", "pydantic", "worker", "requests", "dateutil"):
        yield f"{name},{importlib.util.find_spec(name) is not None}\\n"
""", "name: env\n")
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    found = {row["module"]: row["found"] for row in cli.rows(c)}
    assert found == {"pyarrow": "False", "fastavro": "False", "pydantic": "False",
                     "worker": "False", "requests": "True", "dateutil": "True"}


def test_custom_rows_with_datetimes_and_decimals_cross(connector, cli):
    c = connector(LIST_ONE + """
import datetime, decimal
def read_bytes(c, m):
    yield "1\\n2\\n"
def parser_function(reader, onNext):
    for line in reader:
        n = int(line)
        onNext({"n": n, "at": datetime.datetime(2026, 1, n, 12, 0),
                "amount": decimal.Decimal(f"{n}.50"), "raw": b"\\x00"})
""", """name: rows
parser: {format: custom}
schema:
  - {name: n, type: int64}
  - {name: at, type: timestamp}
  - {name: amount, type: "decimal(10,2)"}
  - {name: raw, type: binary}
""")
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    rows = sorted(cli.rows(c), key=lambda row: row["n"])
    assert [row["n"] for row in rows] == [1, 2]
    assert rows[1]["at"].startswith("2026-01-02") and rows[1]["amount"] == "2.50"


def test_a_row_value_the_runtime_cannot_take_is_named(connector, cli):
    c = connector(LIST_ONE + """
class Money:
    pass
def read_bytes(c, m):
    yield "1\\n"
def parser_function(reader, onNext):
    onNext({"v": Money()})
""", "name: odd\nparser: {format: custom}\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "parser_function" in r.stderr and "(user)" in r.stderr, r.stderr
    assert "Money" in r.stderr, r.stderr


def test_user_process_killing_itself_ends_the_session_as_a_user_failure(connector, cli):
    c = connector(LIST_ONE + """
import os, signal
def read_bytes(c, m):
    yield "a\\n1\\n"
    os.kill(os.getpid(), signal.SIGKILL)
""", "name: dies\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "fragment 'x' failed (user): sandbox process killed by SIGKILL" in r.stderr, r.stderr


def test_forged_frame_on_the_users_own_pipe_is_refused(connector, cli):
    c = connector(LIST_ONE + """
import os
def read_bytes(c, m):
    header = b"B" + (500 << 20).to_bytes(4, "big")
    for fd in range(3, 256):
        try:
            os.write(fd, header)
            break
        except OSError:
            continue
    yield "a\\n1\\n"
""", "name: forger\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert ("failed (user): the connector's process broke the runtime's protocol: "
            "a frame of 524288000 bytes") in r.stderr, r.stderr


def test_listed_metadata_of_any_type_reaches_read_bytes(connector, cli):
    # Listings cross as marshal; a chunk marshal refuses (the datetime) crosses as JSON.
    # read_bytes sees the same metadata either way: JSON types, the rest as text.
    c = connector("""
import csv, datetime, io, json, pathlib
def list_objects(c, m):
    yield {"name": "plain", "fingerprint": "1", "tags": ("a", "b"), "n": 5, "by": {1: 2}}
    if (pathlib.Path(__file__).parent / "dated").exists():
        yield {"name": "dated", "fingerprint": "1", "at": datetime.datetime(2026, 1, 2)}
def read_bytes(c, m):
    out = io.StringIO()
    csv.writer(out).writerows([["meta"], [json.dumps(m, sort_keys=True)]])
    yield out.getvalue()
""", "name: meta\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    (c / "dated").write_text("")
    r, _ = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    metas = sorted(row["meta"] for row in cli.rows(c))
    assert metas == [
        '{"at": "2026-01-02 00:00:00", "fingerprint": "1", "is_prefix": false, '
        '"name": "dated"}',
        '{"by": {"1": 2}, "fingerprint": "1", "is_prefix": false, "n": 5, '
        '"name": "plain", "tags": ["a", "b"]}']
