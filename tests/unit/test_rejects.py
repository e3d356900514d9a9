"""Rejected rows are counted in every summary and kept in a rejects dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.helpers.connectors import PlanConnector

SPEC = """
name: plan
schema:
  on_invalid: skip
  max_errors: 10
  columns:
    - {name: id, type: int64, nullable: false}
    - {name: frag, type: string}
"""


def rejects_files(output: Path) -> list[Path]:
    return sorted((output / "default" / "plan" / "_rejects").glob("*.parquet"))


def test_refresh_counts_and_keeps_rejected_rows(cli, tmp_path):
    plan = PlanConnector(tmp_path, "plan", "default", spec=SPEC)
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1, "x", 3, ""]}, "b": {"fp": "1", "rows": [4]}})
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["rows"], s["rejected"], s["defaulted"]) == (3, 2, 0)

    files = rejects_files(cli.output)
    assert len(files) == 1  # only fragment a rejected anything
    got = pq.read_table(files[0]).to_pylist()
    assert [(g["fragment"], g["row"], g["column"], g["value"], g["reason"]) for g in got] == [
        ("a", 2, "id", "x", "cannot convert"),
        ("a", 4, "id", None, "null in a non-nullable column"),
    ]
    shown = cli("show", str(c), "--rejects", "--jsonl")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(ln)["value"] for ln in shown.stdout.splitlines()] == ["x", None]

    # the human summary says so too
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr

    # a new version of a replaces its rejects; a fragment that leaves takes them along
    plan.set({"a": {"fp": "2", "rows": [1, "y"]}, "b": {"fp": "1", "rows": [4]}})
    r, s = cli.refresh(c)
    assert s["rejected"] == 1
    (only,) = rejects_files(cli.output)
    assert pq.read_table(only).column("value").to_pylist() == ["y"]
    plan.set({"b": {"fp": "1", "rows": [4]}})
    r, s = cli.refresh(c)
    assert s["deleted"] == 1 and rejects_files(cli.output) == []


def test_summary_line_names_rejected_and_defaulted(cli, tmp_path):
    spec = SPEC.replace("on_invalid: skip", "on_invalid: default")
    plan = PlanConnector(tmp_path, "plan", "default",
                         spec=spec.replace("{name: frag, type: string}",
                                           "{name: frag, type: int64}"))
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1, "x"]}})
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    # id 'x' cannot take a value (non-nullable, no default): rejected; frag 'a' defaulted
    assert "rows 1, rejected 1, defaulted 1" in r.stdout


def test_missing_column_fails_by_default_and_is_reported_when_allowed(cli, tmp_path):
    spec = "name: plan\nschema:\n  columns:\n    - {name: id, type: int64}\n    - {name: frgment}\n"
    plan = PlanConnector(tmp_path, "plan", "default", spec=spec)
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1]}})
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 1
    assert "column 'frgment' is declared but not in the data" in r.stderr

    plan = PlanConnector(tmp_path / "c2", "plan", "default",
                         spec=spec.replace("schema:\n", "schema:\n  require_no_missing_fields: "
                                           "false\n"))
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1]}})
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "'frgment'" in r.stderr and "read as null" in r.stderr


ORDER_CSV = ("id,placed,amount\n"
             "1,2026-01-03,1.00\n"
             "2,2026-01-04,4.005\n"      # row 2: amount needs rounding (defaulted)
             "x3,2026-01-05,7.50\n"      # row 3: id is not a number (rejected)
             "4,2026-01-06\n"            # line 5: a field short (malformed)
             "5,not a date,3.25\n"       # row 4: placed is not a date (defaulted)
             "x6,bad,1\n")               # row 5: two bad values, in column order
ORDER_JSONL = ('{"id": 1, "placed": "2026-01-03", "amount": "1.00"}\n'
               '{"id": 2, "placed": "bad", "amount": "1.00"}\n'
               'not json\n'
               '{"id": "x4", "placed": "2026-01-05", "amount": "1.00"}\n')
ORDER_SPEC = """
name: ordered
parser: {{format: {fmt}}}
schema:
  on_invalid: skip
  max_errors: 100
  columns:
    - {{name: id, type: int64}}
    - {{name: placed, type: date, on_invalid: default}}
    - {{name: amount, type: "decimal(10,2)", on_invalid: default}}
"""
ORDER_CODE = """
DATA = {data!r}

def list_objects(context, metadata):
    yield {{"name": "f", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield DATA.encode()
"""


def test_test_lists_rejects_in_the_order_of_the_input_rows(cli, connector):
    """Malformed lines and invalid values of one fragment, as they appear in the file:
    `connector test` and the rejects dataset list them in that order."""
    c = connector(ORDER_CODE.format(data=ORDER_CSV), ORDER_SPEC.format(fmt="xsv"))
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    listed = [ln.split()[:2] for ln in r.stderr.splitlines() if ln.startswith("  ")]
    assert listed == [["row", "2"], ["row", "3"], ["line", "5"], ["row", "4"], ["row", "5"],
                      ["row", "5"]], r.stderr
    assert "row 5 id 'x6'" in r.stderr.split("row 5 placed")[0], r.stderr  # column order
    r, _ = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    kept = cli("show", str(c), "--rejects", "--jsonl").stdout.splitlines()
    assert [(j["row"], j["line"], j["column"]) for j in map(json.loads, kept)] == [
        (2, None, "amount"), (3, None, "id"), (None, 5, None), (4, None, "placed"),
        (5, None, "id"), (5, None, "placed")]

    c = connector(ORDER_CODE.format(data=ORDER_JSONL), ORDER_SPEC.format(fmt="json"),
                  name="j")
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    listed = [ln.split()[:2] for ln in r.stderr.splitlines() if ln.startswith("  ")]
    assert listed == [["row", "2"], ["line", "3"], ["row", "3"]], r.stderr
