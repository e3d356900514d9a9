"""What a first-time user meets following the README: mistakes in connector.yaml, a
dataset bigger than `show` prints, Ctrl-C in a refresh, a pin that does not resolve,
and `infer` on the data the README's timestamp rules accept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import ROOT
from tests.helpers.wait import wait_until
from worker.infer import infer_columns

CODE = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "id\\n1\\n"
"""


@pytest.mark.parametrize(("spec", "needles"), [
    # a typo'd key names the key and the one it resembles
    ("name: x\nparsr: {format: xsv}\n", ["parsr: unknown field", "did you mean 'parser'"]),
    ("name: x\nparser: {format: xsv, delimeter: ';'}\n",
     ["parser.delimeter: unknown field", "did you mean 'delimiter'"]),
    ("name: x\nschema: [{name: id, typ: int64}]\n",
     ["schema.columns[id].typ: unknown field", "did you mean 'type'"]),
    # a YAML error is one readable line naming where it is
    ("name: x\nparser: {format: xsv\nschema: [{name: id, type: int64}]\n",
     ["not valid YAML", "line 3, column 7", "expected ',' or '}', but got ':'"]),
    # a decimal that looks right but is not says why
    ("name: x\nschema: [{name: a, type: 'decimal(2,5)'}]\n",
     ["decimal(2,5)", "scale 5 is larger than its precision 2"]),
    ("name: x\nschema: [{name: a, type: 'decimal(40,2)'}]\n",
     ["decimal(40,2)", "precision 40 is not 1 to 38"]),
    # a strptime format on a column that never parses one is not silently ignored
    ("name: x\nschema: [{name: n, type: int64, format: '%Y'}]\n",
     ["schema.columns[n]", "format applies to date and timestamp columns only"]),
    # one distribution pinned twice cannot resolve: said before anything is built
    ("name: x\npackages: ['requests==2.32.3', 'Requests==2.31.0']\n",
     ["packages", "'requests==2.32.3' and 'Requests==2.31.0' name the same distribution"]),
    # two mistakes: one line each
    ("name: x\nparser: {format: custom, reder: text}\nschema: [{name: a, type: int46}]\n",
     ["parser.reder: unknown field", "unknown type 'int46'"]),
])
def test_spec_mistakes_say_what_and_why(connector, cli, spec, needles):
    r = cli("validate", str(connector(CODE, spec)))
    assert r.returncode == 2, r.stdout + r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert "\\n" not in r.stderr, r.stderr  # no escaped newlines in the message


def test_show_says_when_it_printed_only_the_first_rows(connector, cli):
    rows = 'yield "id\\n" + "".join(f"{i}\\n" for i in range(30))'
    code = CODE.replace('yield "id\\n1\\n"', rows)
    c = connector(code, "name: many\n")
    r, s = cli.refresh(c)
    assert r.returncode == 0 and s["rows"] == 30, r.stderr
    r = cli("show", str(c))
    assert r.returncode == 0, r.stderr
    assert "30 row(s)" in r.stdout
    assert "first 20 of 30 rows" in r.stdout and "--limit" in r.stdout, r.stdout
    r = cli("show", str(c), "--jsonl")
    assert len(r.stdout.splitlines()) == 20
    assert "first 20 of 30 rows" in r.stderr and "--limit" in r.stderr, r.stderr
    r = cli("show", str(c), "--jsonl", "--limit", "100")
    assert len(r.stdout.splitlines()) == 30 and r.stderr == ""


SLOW_CODE = """
import pathlib, time
STARTED = pathlib.Path({started!r})

def list_objects(context, metadata):
    for i in range(30):
        yield {{"name": f"f{{i:02d}}", "fingerprint": "1"}}

def read_bytes(context, metadata):
    n = int(metadata["name"][1:])
    if n >= 2:
        STARTED.touch()
        time.sleep(600)  # the user presses Ctrl-C while these are read
    yield f"id\\n{{n}}\\n"
"""


def _as_from_a_terminal() -> None:
    """Ctrl-C as a terminal's user sends it: a suite started in the background of a
    shell without job control (`.ci/run &`) inherits SIGINT ignored, and so would the
    CLI, which then never hears the Ctrl-C this test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c_refresh(connector: Callable[..., Path], output: Path,
                   tmp_path: Path) -> tuple[Path, int]:
    """A connector folder of SLOW_CODE whose refresh into `output` the user stopped with
    Ctrl-C while its third fragment was read; and how many fragments the refresh said
    it kept. The first two were read by then, but their output may still be on its way
    to the stage when Ctrl-C lands (on a loaded machine), so that is 0 to 2, and the
    tests hold the run record and the next refresh to that count."""
    started = tmp_path / "started"
    c = connector(SLOW_CODE.format(started=str(started)), "name: slow\n"
                  "schema: [{name: id, type: int64}]\n")
    p = subprocess.Popen([sys.executable, "-m", "worker.cli", "refresh", str(c),
                          "--sandbox", "process", "--concurrency", "1"], cwd=ROOT,
                         env={**os.environ, "CONNECTOR_OUTPUT": str(output)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=_as_from_a_terminal)
    wait_until(started.exists, timeout=120, message="the third fragment was never read")
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "Aborted!" not in stderr
    said = re.search(r"interrupted: (\d+) fragment\(s\) read so far are kept", stderr)
    assert said and int(said.group(1)) in (0, 1, 2), stderr
    return c, int(said.group(1))


def test_ctrl_c_in_a_refresh_says_what_is_kept_and_loses_nothing(connector, cli, tmp_path):
    c, kept = ctrl_c_refresh(connector, cli.output, tmp_path)

    # the fragments read before Ctrl-C are kept, nothing is read twice or duplicated
    fast = c / "connector.py"
    fast.write_text(fast.read_text().replace("time.sleep(600)", "pass"))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["read"] == 30 - kept, s
    assert sorted(row["id"] for row in cli.rows(c)) == list(range(30))


def test_deploy_without_a_key_suggests_only_what_works_for_env_credentials(connector, cli):
    c = connector(CODE, "name: x\ncredentials: {env: X_TOKEN}\n")
    env = {"X_TOKEN": "abcdef", "CONNECTOR_SECRET_KEY": ""}
    r = cli("deploy", str(c), env=env)
    assert r.returncode == 2
    assert "CONNECTOR_SECRET_KEY is not set" in r.stderr, r.stderr
    assert "--credentials-ref" not in r.stderr, r.stderr  # refused for env credentials
    assert "Fernet.generate_key()" in r.stderr, r.stderr  # how to make one


def test_a_pin_that_does_not_resolve_is_not_reported_as_context(connector, cli):
    c = connector(CODE, "name: x\npackages: ['requests==99.0']\n")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 1
    assert "requests==99.0" in r.stderr, r.stderr
    assert not r.stderr.startswith("context failed"), r.stderr
    assert "starting the connector failed" in r.stderr, r.stderr


def test_infer_takes_timestamps_with_and_without_offsets_as_conformance_does():
    t = pa.table({"at": ["2026-01-03T10:00:00", "2026-02-03T10:00:00Z",
                         "2026-02-04T10:00:00+02:00"]})
    (col,) = infer_columns([t])
    assert col.type == "timestamp"


def test_missing_column_with_a_default_says_it_would_take_the_default(connector, cli):
    c = connector(CODE, "name: x\nschema:\n  - {name: id, type: int64}\n"
                        "  - {name: note, type: string, default: none}\n")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 1
    assert "column 'note' is declared but not in the data" in r.stderr, r.stderr
    assert "its default" in r.stderr, r.stderr


def test_readme_commands_are_the_cli_commands():
    """Every `connector X` the README's command table lists exists (and the reverse)."""
    readme = (ROOT / "README.md").read_text()
    r = subprocess.run([sys.executable, "-m", "worker.cli", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    listed = {ln.split()[0] for ln in r.stdout.split("Commands:")[1].splitlines()
              if ln.strip()}
    for name in listed:
        assert f"| `connector {name}" in readme, name
    # files the README points at exist
    for path in ("tests/integration/docker/test_hostile.py", "worker/sandbox/seccomp.json"):
        assert path in readme and (ROOT / path).exists(), path
    assert "tests/test_hostile.py" not in readme


def test_a_dataset_written_inside_the_connector_folder_is_not_packed(connector, cli):
    """`cd orders && connector refresh .` writes ./data inside the folder: its table,
    state and rejects are not the connector's files (every refresh would otherwise
    change the image's code layer and grow the deploy bundle)."""
    from worker.folder import walk_folder

    c = connector(CODE, "name: x\nschema: [{name: id, type: int64, on_invalid: skip}]\n")
    r = cli("refresh", str(c), "--sandbox", "process", env={"CONNECTOR_OUTPUT": str(c / "data")})
    assert r.returncode == 0, r.stderr
    assert (c / "data" / "default" / "x" / "_delta_log").is_dir()
    assert [f.name for f in walk_folder(c)] == ["connector.py", "connector.yaml"]


def test_a_bad_date_is_reported_against_the_date_type(connector, cli):
    code = CODE.replace('yield "id\\n1\\n"', 'yield "day\\nnot a date\\n"')
    c = connector(code, "name: x\nschema: [{name: day, type: date}]\n")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 1
    assert "column 'day' (date): cannot convert 'not a date'" in r.stderr, r.stderr
    assert "timestamp" not in r.stderr, r.stderr


def test_read_bytes_failing_under_a_custom_parser_is_named_as_read_bytes(connector, cli):
    """The custom parser pulls the bytes, but the exception is read_bytes': the message
    names the function the traceback points into."""
    code = """
def list_objects(context, metadata):
    yield {"name": "two.kv", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield b"a=1\\n"
    raise ConnectionError("remote went away")

def parser_function(reader, onNext):
    for line in reader:
        onNext(dict([line.strip().split("=", 1)]))
"""
    c = connector(code, "name: kv\nparser: {format: custom}\n")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "read_bytes('two.kv') raised ConnectionError: remote went away" in r.stderr, r.stderr
    assert "parser_function('two.kv') raised" not in r.stderr, r.stderr
