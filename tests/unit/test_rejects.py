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
