"""parser_function rows crossing from the user process to the runtime (process sandbox).

What a user sees: every row arrives once, in order, with the union of its batch's keys
as columns; a key or value the runtime cannot take fails the fragment naming the row
or column and the reason, as the user's (or the data's) failure. What user code forges
on the pipe to the runtime is refused as a protocol break, never allocated, never
reported as the project's fault.
"""

from __future__ import annotations

import json

import pytest

LIST_ONE = """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}

def read_bytes(c, m):
    yield "go\\n"
"""

CUSTOM = "name: rows\nparser: {format: custom}\n"


def test_rows_with_different_keys_cross_as_the_union_in_first_seen_order(connector, cli):
    c = connector(LIST_ONE + """
def parser_function(reader, onNext):
    onNext({"a": 1, "b": "x"})
    onNext({"c": 2.5})
    onNext({"b": "y", "a": 3})
    onNext({})
""", CUSTOM)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["rows"] == 4
    rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in cli.rows(c)]
    assert rows == [{"a": 1, "b": "x", "c": None}, {"a": None, "b": None, "c": 2.5},
                    {"a": 3, "b": "y", "c": None}, {"a": None, "b": None, "c": None}]
    assert list(rows[0]) == ["a", "b", "c"]


def test_many_rows_cross_exactly_with_rejects_numbered_across_batches(connector, cli):
    # 150,001 rows: three batches of the shim, dicts with their keys in two orders, text
    # the declared schema cannot cast counted and numbered by its place in the fragment.
    c = connector(LIST_ONE + """
def parser_function(reader, onNext):
    for i in range(1, 150_002):
        if i % 50_000 == 0:
            onNext({"n": "bad", "s": str(i)})
        elif i % 2:
            onNext({"n": str(i), "s": str(i)})
        else:
            onNext({"s": str(i), "n": str(i)})
""", CUSTOM + "schema:\n  on_invalid: skip\n  max_errors: 10\n  columns:\n"
               "    - {name: n, type: int64}\n    - {name: s, type: string}\n")
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["rows"], s["rejected"]) == (149_998, 3), s
    rows = cli.rows(c)
    assert [row["n"] for row in rows] == [i for i in range(1, 150_002) if i % 50_000]
    assert all(row["s"] == str(row["n"]) for row in rows)
    shown = cli("show", str(c), "--rejects", "--jsonl")
    rejected = [json.loads(ln) for ln in shown.stdout.splitlines() if ln.strip()]
    assert sorted(rec["row"] for rec in rejected) == [50_000, 100_000, 150_000], rejected


def test_a_key_that_is_not_a_string_is_named(connector, cli):
    c = connector(LIST_ONE + """
def parser_function(reader, onNext):
    onNext({"a": 1})
    onNext({"a": 2, 7: "seven"})
""", CUSTOM)
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "failed (user)" in r.stderr, r.stderr
    assert "row 2" in r.stderr and "key 7 (int)" in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr


@pytest.mark.parametrize("value, needle", [
    ("10**30", "column 'v'"),    # an int beyond int64
    ("1j", "column 'v'"),        # a type Arrow has no column for
])
def test_a_value_arrow_cannot_hold_is_named_with_its_column(connector, cli, value, needle):
    c = connector(LIST_ONE + f"""
def parser_function(reader, onNext):
    onNext({{"v": 1}})
    onNext({{"v": {value}}})
""", CUSTOM)
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "failed (data)" in r.stderr and "custom: rows 1-2" in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_values_marshal_cannot_carry_cross_and_others_are_named(connector, cli):
    c = connector(LIST_ONE + """
import datetime
def parser_function(reader, onNext):
    onNext({"at": datetime.date(2026, 1, 2), "t": (1, 2)})
""", CUSTOM)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    (row,) = cli.rows(c)
    assert row["at"].startswith("2026-01-02") and row["t"] == [1, 2], row
    bad = connector(LIST_ONE + """
def parser_function(reader, onNext):
    onNext({"f": lambda: 1})
""", CUSTOM.replace("rows", "bad"), name="bad")
    r, _ = cli.refresh(bad)
    assert r.returncode == 1
    assert "failed (user)" in r.stderr and "column 'f' holds a function" in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr


def test_a_row_too_big_to_cross_is_the_users_error(connector, cli):
    c = connector(LIST_ONE + """
def parser_function(reader, onNext):
    onNext({"v": "small"})
    onNext({"v": "x" * (257 << 20)})
""", CUSTOM)
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "failed (user)" in r.stderr, r.stderr
    assert "row 2" in r.stderr and "at most 256 MiB" in r.stderr, r.stderr
    assert "broke the runtime's protocol" not in r.stderr, r.stderr


# --- hostile: user code writes its own frames to the runtime ------------------------------

FORGE = LIST_ONE + """
import marshal, os, sys
def parser_function(reader, onNext):
    onNext({"a": 1})
    body = marshal.dumps(BATCH)
    os.write(int(sys.argv[2]), KIND + len(body).to_bytes(4, "big") + body)
    onNext({"a": 2})
"""


@pytest.mark.parametrize("batch", [
    "[1, 2]",                                   # rows that are not dicts
    "[{'a': 1}]",                               # the row-dict shape is not what crosses
    "(10**12, (), [])",                         # a row count past any batch
    "(2, ('a',), [[1]])",                       # a column shorter than the batch
    "(1, ('a', 'a'), [[1], [2]])",              # the same column twice
    "(1, (7,), [[1]])",                         # a column name that is not text
    "(1, ('a', 'b'), [[1]])",                   # fewer columns than names
    "(1, ('a',), [[1]], 'extra')",              # another shape
])
def test_a_forged_row_batch_is_refused_as_the_users_failure(connector, cli, batch):
    c = connector(FORGE.replace("BATCH", batch).replace("KIND", 'b"M"'), CUSTOM)
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert ("failed (user): the connector's process broke the runtime's protocol: "
            "a row batch") in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr


# --- values of several Python types in one column -------------------------------------

MIXED = LIST_ONE + """
import decimal
def parser_function(reader, onNext):
    onNext({"id": 1, "qty": 1})
    onNext({"id": 2, "qty": "bad"})
    onNext({"id": 3, "qty": " 3 "})
    onNext({"id": 4, "qty": decimal.Decimal("4")})
    onNext({"id": 5, "qty": None})
"""
QTY = "    columns:\n      - {name: id, type: int64}\n      - {name: qty, type: int64}\n"


def test_a_value_of_another_type_in_a_declared_column_is_rejected_alone(connector, cli):
    c = connector(MIXED, CUSTOM + "schema:\n  on_invalid: skip\n  max_errors: 5\n"
                  + QTY.replace("    ", "  "))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["rows"], s["rejected"]) == (4, 1), s
    assert [(row["id"], row["qty"]) for row in cli.rows(c)] == [
        (1, 1), (3, 3), (4, 4), (5, None)]
    shown = cli("show", str(c), "--rejects", "--jsonl")
    (rec,) = [json.loads(ln) for ln in shown.stdout.splitlines() if ln.strip()]
    assert (rec["row"], rec["column"], rec["value"]) == (2, "qty", "bad"), rec


def test_a_value_of_another_type_is_defaulted_or_fails_per_policy(connector, cli):
    c = connector(MIXED, CUSTOM + "schema:\n  on_invalid: default\n  max_errors: 5\n"
                  + QTY.replace("    ", "  "))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["rows"], s["rejected"], s["defaulted"]) == (5, 0, 1), s
    assert [row["qty"] for row in cli.rows(c)] == [1, None, 3, 4, None]
    failing = connector(MIXED, CUSTOM.replace("rows", "f") + "schema:\n"
                        + QTY.replace("    ", "  "), name="f")
    r, _ = cli.refresh(failing)
    assert r.returncode == 1
    assert "failed (data)" in r.stderr, r.stderr
    assert "row 2 column 'qty' (int64): cannot convert 'bad'" in r.stderr, r.stderr


def test_mixed_types_without_a_declared_type_name_the_column_rows_and_types(connector, cli):
    c = connector(MIXED, CUSTOM)
    r, _ = cli.refresh(c)
    assert r.returncode == 1
    assert "failed (data)" in r.stderr, r.stderr
    assert ("column 'qty' holds int (row 1) and str (row 2); declare its type under "
            "schema.columns") in r.stderr, r.stderr


# --- UUIDs ---------------------------------------------------------------------------------

UUIDS = LIST_ONE + """
import uuid
def parser_function(reader, onNext):
    onNext({"id": uuid.UUID(int=1), "refs": [uuid.UUID(int=2)], "n": 1})
    onNext({"id": None, "refs": [], "n": 2})
"""


@pytest.mark.parametrize("schema", ["", "schema:\n  columns:\n    - {name: id, type: string}\n"
                                        "    - {name: refs, type: json}\n"])
def test_uuids_are_stored_as_their_canonical_text(connector, cli, schema):
    c = connector(UUIDS, CUSTOM + schema)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["rows"] == 2, s
    rows = cli.rows(c)
    assert [row["id"] for row in rows] == ["00000000-0000-0000-0000-000000000001", None]
    refs = [row["refs"] if isinstance(row["refs"], list) else json.loads(row["refs"])
            for row in rows]
    assert refs == [["00000000-0000-0000-0000-000000000002"], []]
    table = cli("show", str(c), env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "00000000-0000-0000-0000-000000000001" in table.stdout, table.stdout
