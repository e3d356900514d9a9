"""Tables printed into a pipe or a file (scripts, logs, `| less`) keep every character:
rich would fit them to 80 columns when stdout is not a terminal, cutting cells to `…`."""

from __future__ import annotations

import json
import re

LONG = "a-long-value-" * 12  # 156 characters: more than any 80-column cell holds

CODE = f"""
def list_objects(context, metadata):
    yield {{"name": "a-fragment-with-a-rather-long-name.csv", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield "id,note\\n1,{LONG}\\n"
"""


def test_show_test_and_history_keep_whole_cells_when_piped(connector, cli):
    c = connector(CODE, "name: piped\n")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    assert LONG in r.stdout and "…" not in r.stdout, r.stdout
    r, _ = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    r = cli("show", str(c))
    assert r.returncode == 0, r.stderr
    assert LONG in r.stdout and "a-fragment-with-a-rather-long-name.csv" in r.stdout, r.stdout
    assert "…" not in r.stdout, r.stdout
    r = cli("history", str(c))
    assert r.returncode == 0, r.stderr
    (v,) = [json.loads(ln) for ln in cli("history", str(c), "--json").stdout.splitlines()]
    assert v["refresh_id"] in r.stdout, r.stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r.stdout), r.stdout  # one line
    assert "…" not in r.stdout, r.stdout
