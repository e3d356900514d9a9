"""Local refresh through the CLI with the process sandbox: incremental semantics,
failures that lose nothing, and the example connectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, table_files
from tests.helpers.connectors import PlanConnector, ids


@pytest.fixture
def plan(tmp_path: Path) -> PlanConnector:
    """A connector listing and reading what the test puts in its plan."""
    return PlanConnector(tmp_path, "plan", "default")


def test_incremental_refresh_reads_only_new_and_changed(plan, cli):
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1, 2]}, "b": {"fp": "1", "rows": [3]}})
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s == {"listed": 2, "read": 2, "skipped": 0, "recovered": 0, "deleted": 0, "failed": 0,
                 "rows": 3,
                 "rejected": 0, "defaulted": 0}
    assert ids(cli.rows(c)) == [1, 2, 3]

    # unchanged: nothing read
    r, s = cli.refresh(c)
    assert (s["read"], s["skipped"]) == (0, 2)

    # b changes, c appears, a disappears
    plan.set({"b": {"fp": "2", "rows": [30, 31]}, "c": {"fp": "1", "rows": [4]}})
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s == {"listed": 2, "read": 2, "skipped": 0, "recovered": 0, "deleted": 1, "failed": 0,
                 "rows": 3,
                 "rejected": 0, "defaulted": 0}
    assert ids(cli.rows(c)) == [4, 30, 31]
    # the current version holds one file per fragment; older versions' files stay for
    # `show --version` until a vacuum with no retention removes them
    assert len(table_files(cli.output, "default", "plan")) == 2
    r = cli("vacuum", str(c), "--retention", "0s")
    assert r.returncode == 0, r.stderr
    assert len(list((cli.output / "default" / "plan" / "data").glob("*.parquet"))) == 2
    assert ids(cli.rows(c)) == [4, 30, 31]


def test_failed_fragment_is_reread_next_time_and_nothing_duplicates(plan, cli):
    c = plan.folder
    remote = {f"f{i}": {"fp": "1", "rows": [i]} for i in range(6)}
    remote["f3"] = {"fp": "1", "rows": "FAIL"}
    plan.set(remote)
    r, s = cli.refresh(c, "--concurrency", "1")
    assert r.returncode == 1
    assert s["failed"] == 1
    assert "remote said no for f3" in r.stderr
    assert "RuntimeError" in r.stderr and "connector.py" in r.stderr  # the user's traceback
    first = ids(cli.rows(c))
    assert 3 not in first and len(first) == s["read"]

    remote["f3"] = {"fp": "1", "rows": [3]}
    plan.set(remote)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["failed"] == 0 and s["skipped"] == len(first)
    assert ids(cli.rows(c)) == [0, 1, 2, 3, 4, 5]


def test_a_first_refresh_whose_every_fragment_fails_makes_no_table(plan, cli):
    """Nothing read: no empty version 0 standing for the dataset, `show` and `history`
    say there is no table yet, and the next refresh reads the failed fragments."""
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": "FAIL"}})
    r, s = cli.refresh(c)
    assert r.returncode == 1, r.stderr
    assert (s["read"], s["failed"]) == (0, 1)
    assert "remote said no for a" in r.stderr
    assert not (cli.output / "default" / "plan" / "_delta_log").exists()
    r = cli("history", str(c))
    assert r.returncode == 0 and "no table" in r.stderr, r.stdout + r.stderr
    r = cli("show", str(c))
    assert "no table" in r.stderr, r.stdout + r.stderr

    plan.set({"a": {"fp": "1", "rows": [1, 2]}})
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["read"], s["failed"]) == (1, 0)
    assert ids(cli.rows(c)) == [1, 2]
    assert [v["version"] for v in map(json.loads, cli("history", str(c), "--json")
                                      .stdout.splitlines())] == [0]


def test_test_command_prints_each_folder_once(plan, cli):
    c = plan.folder
    plan.set({n: {"fp": "1", "rows": [1]} for n in ("2026/01/a", "2026/01/b", "2026/02/c")})
    r = cli("test", str(c), "--sandbox", "process", "--limit", "0")
    assert r.returncode == 0, r.stderr
    tree = r.stdout.split("\n\n")[0]
    assert tree.count("2026/") == 1 and tree.count("01/") == 1 and tree.count("02/") == 1
    assert all(tree.count(leaf) == 1 for leaf in (" a ", " b ", " c "))


def test_user_print_goes_to_log_not_data(plan, cli):
    c = plan.folder
    plan.set({"a": {"fp": "1", "rows": [1]}})
    r = cli("test", str(c), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    assert "reading a" in r.stdout  # shown as the fragment's log
    assert "a" in r.stdout and "1 row" in r.stdout


@pytest.mark.parametrize("example", ["blobs", "avro_events", "jsonl_users", "custom_parser",
                                     "messy_orders"])
def test_examples_refresh_offline(example, cli):
    path = ROOT / "examples" / example
    r, s = cli.refresh(path)
    assert r.returncode == 0, r.stderr
    assert s["failed"] == 0 and s["read"] == s["listed"] > 0 and s["rows"] > 0
    rows = cli.rows(path)
    assert len(rows) == s["rows"]
    r, s = cli.refresh(path)
    assert s["read"] == 0 and s["skipped"] == s["listed"]


def test_blobs_example_expands_nested_prefixes_and_types_columns(cli):
    path = ROOT / "examples" / "blobs"
    r, s = cli.refresh(path)
    assert s["listed"] == 3  # 2026/01/{orders-01,orders-02}.csv, 2026/02/orders-01.csv
    rows = {r["order_id"]: r for r in cli.rows(path)}
    assert rows[3]["shipped"] is False  # empty cell -> declared default
    assert rows[6]["amount"] == "300.00"  # decimal(10,2)
    assert rows[1]["ordered_at"].startswith("2026-01-03")


def test_custom_parser_example_gets_credentials_and_nested_listing(cli):
    path = ROOT / "examples" / "custom_parser"
    cli.refresh(path)
    col = sorted(r["col1"] for r in cli.rows(path))
    assert "hi from folder1/fragment3" in col
    assert "fragment1,md51" in col


def test_jsonl_example_flattens_and_renames(cli):
    path = ROOT / "examples" / "jsonl_users"
    cli.refresh(path)
    rows = {r["id"]: r for r in cli.rows(path)}
    assert rows[1]["city"] == "London" and rows[2]["zip"] == "22201"
    assert json.loads(rows[3]["tags"]) == ["kernel", "git"]


def test_messy_orders_example_keeps_its_rejects(cli):
    path = ROOT / "examples" / "messy_orders"
    r, s = cli.refresh(path)
    assert (s["rows"], s["rejected"], s["defaulted"]) == (4, 2, 2), r.stderr
    shown = cli("show", str(path), "--rejects", "--jsonl")
    got = {(x["line"] or x["row"], x["value"], x["action"])
           for x in map(json.loads, shown.stdout.splitlines())}
    # line 7 of the file is the short row (title, header and a comment line before it)
    assert got == {(7, "4,2026-01-06,12.00", "rejected"), (3, "x3", "rejected"),
                   (4, "not a date", "defaulted"), (2, "4.005", "defaulted")}
