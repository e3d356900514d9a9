"""The dataset as a Delta table, through the CLI as a user runs it: one version per
refresh, copies and moves, crashes at every step of a commit, schema changes, history,
and `show` on values Python cannot hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.conftest import table_files
from tests.helpers.connectors import ids
from worker.table.crash import STEPS

# Fragments come from plan.json in the connector folder, so a test can change what the
# "remote" holds between refreshes. A fragment whose rows are "FAIL" raises.
PLAN_CODE = """
import json, pathlib
HERE = pathlib.Path(__file__).parent

def list_objects(context, metadata):
    for name, spec in json.loads((HERE / "plan.json").read_text()).items():
        yield {"name": name, "fingerprint": spec["fp"]}

def read_bytes(context, metadata):
    spec = json.loads((HERE / "plan.json").read_text())[metadata["name"]]
    if spec["rows"] == "FAIL":
        raise RuntimeError("remote said no for " + metadata["name"])
    print("reading", metadata["name"])
    yield "id,frag\\n"
    for i in spec["rows"]:
        yield f"{i},{metadata['name']}\\n"
"""
PLAN_SPEC = """
name: plan
schema:
  - {name: id, type: int64}
  - {name: frag, type: string}
"""


def set_plan(folder: Path, plan: dict) -> None:
    (folder / "plan.json").write_text(json.dumps(plan))


def dataset(cli, name: str = "plan") -> Path:
    return cli.output / "default" / name


def test_each_refresh_commits_one_version_with_its_refresh_id_and_counts(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    cli.refresh(c)
    set_plan(c, {"b": {"fp": "2", "rows": [20]}, "c": {"fp": "1", "rows": [3]}})
    r, s = cli.refresh(c)
    assert s["read"] == 2 and s["deleted"] == 1
    cli.refresh(c)  # nothing changed: no new version
    table = DeltaTable(str(dataset(cli)))
    assert table.version() == 1
    log = dataset(cli) / "_delta_log" / "00000000000000000001.json"
    actions = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum("add" in a for a in actions) == 2      # b's new file, c
    assert sum("remove" in a for a in actions) == 2   # b's old file, a
    h = cli("history", str(c), "--json")
    assert h.returncode == 0, h.stderr
    versions = [json.loads(x) for x in h.stdout.splitlines()]
    assert [v["version"] for v in versions] == [1, 0]
    assert versions[0]["counts"]["read"] == 2 and versions[0]["counts"]["deleted"] == 1
    assert len(versions[0]["refresh_id"]) == 12
    # the older version is still readable
    old = cli("show", str(c), "--version", "0", "--jsonl")
    assert old.returncode == 0, old.stderr
    assert ids([json.loads(x) for x in old.stdout.splitlines()]) == [1, 2]
    assert ids(cli.rows(c)) == [3, 20]


def test_rows_carry_their_fragment_name_unless_turned_off(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1, 2]}, "b": {"fp": "1", "rows": [3]}})
    cli.refresh(c)
    assert {(r["id"], r["_fragment"]) for r in cli.rows(c)} == {(1, "a"), (2, "a"), (3, "b")}
    off = {"CONNECTOR_FRAGMENT_COLUMN": "0"}
    r, s = cli.refresh(c, env=off)
    assert s["read"] == 2  # a different table layout is a different read
    r = cli("show", str(c), "--jsonl", env=off)
    assert "_fragment" not in json.loads(r.stdout.splitlines()[0])


def test_a_copied_or_moved_dataset_is_whole_and_independent(connector, cli, tmp_path):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    cli.refresh(c)
    copy_out = tmp_path / "copy"
    shutil.copytree(cli.output, copy_out)
    copy = type(cli)(copy_out)
    set_plan(c, {"b": {"fp": "2", "rows": [20]}})
    r, s = copy.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["read"] == 1 and s["deleted"] == 1
    assert ids(copy.rows(c)) == [20]
    copy("vacuum", str(c), "--retention", "0s")
    # the original saw none of it, and every file it needs is there
    assert ids(cli.rows(c)) == [1, 2]
    assert all(Path(f).exists() for f in table_files(cli.output, "default", "plan"))
    # a moved dataset still reads and refreshes
    moved_out = tmp_path / "moved"
    cli.output.rename(moved_out)
    moved = type(cli)(moved_out)
    assert ids(moved.rows(c)) == [1, 2]
    r, s = moved.refresh(c)
    assert (s["read"], s["skipped"], s["deleted"]) == (1, 0, 1)
    assert ids(moved.rows(c)) == [20]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_loses_and_duplicates_nothing(connector, cli, step):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]},
                 "k": {"fp": "1", "rows": [7]}})
    cli.refresh(c)
    set_plan(c, {"b": {"fp": "2", "rows": [20, 21]}, "c": {"fp": "1", "rows": [3]},
                 "k": {"fp": "1", "rows": [7]}})
    r, _ = cli.refresh(c, "--concurrency", "1", env={"CONNECTOR_CRASH_AT": step})
    assert r.returncode == 77, r.stderr
    # readers see the table before the refresh or after it, never a mix
    assert ids(cli.rows(c)) in ([1, 2, 7], [3, 7, 20, 21])
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert ids(cli.rows(c)) == [3, 7, 20, 21]
    assert len(table_files(cli.output, "default", "plan")) == 3
    # and state agrees with the table: the next refresh has nothing to do
    r, s = cli.refresh(c)
    assert (s["read"], s["deleted"], s["skipped"]) == (0, 0, 3)


def test_a_crash_midway_through_applying_state_resumes_exactly_once(connector, cli):
    # State is applied in batches (one transaction each); a crash after the first of
    # several batches leaves the table committed and state half applied.
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "gone": {"fp": "1", "rows": [9]}})
    cli.refresh(c)
    set_plan(c, {"a": {"fp": "2", "rows": [10]}, **{f"n{i}": {"fp": "1", "rows": [100 + i]}
                                                    for i in range(5)}})
    env = {"CONNECTOR_CRASH_AT": "state-batch-applied", "CONNECTOR_STATE_BATCH": "2"}
    r, _ = cli.refresh(c, "--concurrency", "1", env=env)
    assert r.returncode == 77, r.stderr
    assert ids(cli.rows(c)) == [10, 100, 101, 102, 103, 104]  # the table holds it all
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    # nothing read twice: the crashed refresh's reads are reported as recovered
    assert (s["read"], s["deleted"], s["skipped"], s["recovered"]) == (0, 0, 0, 6)
    assert ids(cli.rows(c)) == [10, 100, 101, 102, 103, 104]
    assert len(table_files(cli.output, "default", "plan")) == 6
    r, s = cli.refresh(c)
    assert (s["read"], s["deleted"], s["skipped"]) == (0, 0, 6)


WIDER_SPEC = """
name: plan
schema:
  require_no_missing_fields: false
  columns:
    - {name: id, type: int64}
    - {name: frag, type: string}
    - {name: extra, type: string}
"""


def test_a_schema_change_rereads_every_fragment_in_one_version(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    cli.refresh(c)
    (c / "connector.yaml").write_text(WIDER_SPEC)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert (s["read"], s["skipped"]) == (2, 0)
    table = DeltaTable(str(dataset(cli)))
    assert table.version() == 1
    assert "extra" in [f.name for f in table.schema().fields]
    assert all("extra" in r for r in cli.rows(c))
    # Polars scans the whole folder's table with one schema
    import polars as pl

    assert pl.scan_delta(str(dataset(cli))).collect().height == 2


def test_a_schema_change_with_a_failed_fragment_commits_nothing(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    cli.refresh(c)
    (c / "connector.yaml").write_text(WIDER_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": "FAIL"}})
    r, s = cli.refresh(c, "--concurrency", "1")
    assert r.returncode == 1 and s["failed"] == 1
    assert DeltaTable(str(dataset(cli))).version() == 0  # old schema, old rows
    assert ids(cli.rows(c)) == [1, 2]
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    r, s = cli.refresh(c)
    assert s["read"] == 2 and ids(cli.rows(c)) == [1, 2]
    assert all("extra" in r for r in cli.rows(c))


def test_full_refresh_rereads_everything(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    cli.refresh(c)
    r, s = cli.refresh(c, "--full")
    assert (s["read"], s["skipped"]) == (2, 0)
    assert ids(cli.rows(c)) == [1, 2]
    assert len(table_files(cli.output, "default", "plan")) == 2


ODD_CODE = """
import pathlib

def list_objects(context, metadata):
    yield {"name": "odd", "fingerprint": "1"}

def read_bytes(context, metadata):
    # written by the test: connector code has no pyarrow unless it pins one
    yield (pathlib.Path(__file__).parent / "odd.parquet").read_bytes()
"""


def odd_parquet() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({
        "id": pa.array([1, 2], pa.int64()),
        # Spark's int96 timestamps arrive as nanoseconds, not whole microseconds
        "at": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns")),
        "day": pa.array([3_000_000, -800_000], pa.date32()),  # years 10183 and -221
    })
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def test_show_prints_values_python_cannot_hold(connector, cli):
    c = connector(ODD_CODE, "name: odd\nparser: {format: parquet}\n", name="odd")
    (c / "odd.parquet").write_bytes(odd_parquet())
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["rows"] == 2
    rows = {r["id"]: r for r in cli.rows(c)}
    assert rows[1]["at"] == "2023-11-14T22:13:20.123456"  # stored as Delta's microseconds
    assert rows[1]["day"] == "10183-09-21"
    assert rows[2]["at"] is None and rows[2]["day"] == "-0221-09-04"
    r = cli("show", str(c))
    assert r.returncode == 0, r.stderr
    assert "10183" in r.stdout


def test_limit_applies_to_jsonl_and_an_empty_show_says_where_it_looked(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    r = cli("show", str(c))
    assert r.returncode == 0
    assert str(dataset(cli)) in r.stderr and "no table" in r.stderr
    set_plan(c, {f"f{i}": {"fp": "1", "rows": [i]} for i in range(5)})
    cli.refresh(c)
    r = cli("show", str(c), "--jsonl", "--limit", "2")
    assert len(r.stdout.splitlines()) == 2


JSON_CODE = """
import json, pathlib
HERE = pathlib.Path(__file__).parent

def list_objects(context, metadata):
    for name in json.loads((HERE / "plan.json").read_text()):
        yield {"name": name, "fingerprint": "1"}

def read_bytes(context, metadata):
    for row in json.loads((HERE / "plan.json").read_text())[metadata["name"]]:
        yield json.dumps(row) + "\\n"
"""


def test_an_undeclared_schema_widens_in_one_version_and_engines_read_it(connector, cli):
    c = connector(JSON_CODE, "name: loose\nparser: {format: json}\n", name="loose")
    (c / "plan.json").write_text(json.dumps({"a": [{"id": 1}], "b": [{"id": 2}]}))
    cli.refresh(c)
    (c / "plan.json").write_text(json.dumps({"a": [{"id": 1}], "b": [{"id": 2}],
                                             "c": [{"id": 3, "note": "new"}]}))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert s["read"] == 1
    path = str(cli.output / "default" / "loose")
    table = DeltaTable(path)
    assert table.version() == 1 and "note" in [f.name for f in table.schema().fields]
    rows = {r["id"]: r for r in cli.rows(c)}
    assert rows[3]["note"] == "new" and rows[1]["note"] is None
    import polars as pl

    assert pl.read_delta(path).sort("id")["note"].to_list() == [None, None, "new"]


def test_vacuum_names_a_bad_retention(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    r = cli("vacuum", str(c), "--retention", "a while")
    assert r.returncode == 2
    assert "retention" in r.stderr and "not an interval" in r.stderr


def test_vacuum_after_a_crash_keeps_the_files_recovery_commits(connector, cli):
    c = connector(PLAN_CODE, PLAN_SPEC)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}})
    cli.refresh(c)
    set_plan(c, {"a": {"fp": "1", "rows": [1]}, "b": {"fp": "1", "rows": [2]}})
    r, _ = cli.refresh(c, env={"CONNECTOR_CRASH_AT": "fragment-staged"})
    assert r.returncode == 77
    r = cli("vacuum", str(c), "--retention", "0s")
    assert r.returncode == 0, r.stderr
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert ids(cli.rows(c)) == [1, 2]


# Rows whose shape comes from a file the test changes between refreshes.
SHAPED_CODE = """
import datetime, json, pathlib
HERE = pathlib.Path(__file__).parent

def list_objects(context, metadata):
    for name in json.loads((HERE / "shapes.json").read_text()):
        yield {"name": name, "fingerprint": "1"}

def read_bytes(context, metadata):
    yield metadata["name"].encode()

def parser_function(reader, onNext):
    shape = json.loads((HERE / "shapes.json").read_text())[reader.read().decode()]
    row = {"id": 1}
    if shape == "case":
        row.update({"Amount": 1, "amount": 2})
    elif shape == "time":
        row["at"] = datetime.time(1, 2)
    elif shape == "interval":
        row["took"] = datetime.timedelta(seconds=5)
    elif shape == "nested-case":
        row["s"] = {"k": 1, "K": 2}
    onNext(row)
"""


@pytest.mark.parametrize("shape,needle", [
    ("case", "columns 'Amount' and 'amount' differ only in case"),
    ("time", "column 'at' (time64[us])"),
    ("interval", "column 'took' (duration[us])"),
    ("nested-case", "column 's'"),
])
def test_rows_delta_cannot_store_fail_their_fragment_and_leave_the_table_usable(
        connector, cli, shape, needle):
    """Rows the table cannot hold (names equal but for case: Delta's column names are
    case-insensitive; Arrow types Delta has none for) fail their fragment as a data
    error naming the column. They never reach the commit, so the dataset is not left
    with a version it can never commit, and the next refresh works."""
    c = connector(SHAPED_CODE, "name: shaped\nparser: {format: custom, reader: binary}\n")
    (c / "shapes.json").write_text(json.dumps({"good": "plain", "bad": shape}))
    r, s = cli.refresh(c)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1, out
    assert s["failed"] == 1 and s["read"] == 1, s
    assert "fragment 'bad' failed (data)" in out and needle in out, out
    assert "Traceback" not in out, out
    assert [row["_fragment"] for row in cli.rows(c)] == ["good"]

    (c / "shapes.json").write_text(json.dumps({"good": "plain", "bad": "plain"}))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(row["_fragment"] for row in cli.rows(c)) == ["bad", "good"]


def test_fragments_whose_columns_differ_only_in_case_fail_the_commit_not_the_table(
        connector, cli):
    """Each fragment alone is storable, together they are not (`amount` and `Amount`):
    the refresh fails with a data error naming them, and the table stays usable."""
    code = SHAPED_CODE.replace('row = {"id": 1}', 'row = {"id": 1, shape: 1}')
    c = connector(code, "name: shaped\nparser: {format: custom, reader: binary}\n")
    (c / "shapes.json").write_text(json.dumps({"one": "amount"}))
    assert cli.refresh(c)[0].returncode == 0
    (c / "shapes.json").write_text(json.dumps({"one": "amount", "two": "Amount"}))
    r, s = cli.refresh(c)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1 and "failed (data)" in out, out
    assert "'amount' and 'Amount' differ only in case" in out, out
    assert "Traceback" not in out, out
    assert [row["_fragment"] for row in cli.rows(c)] == ["one"]
    (c / "shapes.json").write_text(json.dumps({"one": "amount", "two": "amount"}))
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(row["_fragment"] for row in cli.rows(c)) == ["one", "two"]


def test_a_long_lived_table_is_checkpointed_and_reads_the_same_from_it(tmp_path):
    # Loading the table to commit reads the last checkpoint plus the commits after it,
    # never the whole log: a refresh's commit costs the same at version 10 or 10,000.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from worker.models import Commit
    from worker.sink import Output
    from worker.table.delta import DeltaDataset

    output = Output(str(tmp_path))
    table = DeltaDataset.of(output, "t", "c")
    root = Path(output.dataset_dir("t", "c"))
    schema = pa.schema([("id", pa.int64())])
    files: dict[int, Commit] = {}
    for v in range(105):  # version v replaces fragment v % 3's file with id v
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [v]}, schema=schema), root / f"data/v{v}.parquet")
        new = Commit(name=str(v % 3), fingerprint=str(v), path=f"data/v{v}.parquet", rows=1,
                     size=(root / f"data/v{v}.parquet").stat().st_size)
        old = files.get(v % 3)
        files[v % 3] = new
        table.commit(table.table(), adds=[new], removes=[old] if old else [], schema=schema,
                     overwrite=False, seq=v + 1, metadata={"refresh_id": f"r{v}"})
    log = root / "_delta_log"
    assert (log / f"{99:020d}.checkpoint.parquet").exists()
    rows = sorted(table.read().column("id").to_pylist())
    assert rows == [102, 103, 104] and table.seq() == 105
    # The commits the checkpoint covers are not needed any more to read the table.
    for v in range(99):
        (log / f"{v:020d}.json").unlink()
    assert sorted(table.read().column("id").to_pylist()) == rows
    assert table.seq() == 105 and table.history(1)[0].refresh_id == "r104"


def test_show_prints_a_table_whose_column_arrow_cannot_load(connector, cli, tmp_path):
    # A uuid column as an older version committed it: Delta keeps it as binary tagged
    # with Arrow's uuid extension, which Arrow then refuses to load ("Invalid storage
    # type for UuidType"). show still prints every row, the UUIDs as text.
    import uuid

    import pyarrow as pa
    from deltalake import write_deltalake

    c = connector("def list_objects(c, m):\n    return []\n\n"
                  "def read_bytes(c, m):\n    return []\n", "name: legacy\n")
    write_deltalake(str(tmp_path / "out" / "default" / "legacy"),
                    pa.table({"u": pa.array([uuid.UUID(int=7), None]), "n": [1, 2]}))
    for args in (["--jsonl"], []):
        r = cli("show", str(c), *args, env={"COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        assert "00000000-0000-0000-0000-000000000007" in r.stdout, r.stdout


def test_a_uuid_column_from_any_parser_is_stored_as_text() -> None:
    # Whatever a parser hands over, the table never gets Arrow's uuid extension (Delta
    # would keep it as tagged binary that no Arrow reader loads back).
    import uuid

    import pyarrow as pa

    from worker.table.schema import for_table

    batch = pa.RecordBatch.from_arrays([pa.array([uuid.UUID(int=9), None])], names=["u"])
    out = for_table(batch, "f")
    assert out.schema.field("u").type == pa.string()
    assert out.column(0).to_pylist() == ["00000000-0000-0000-0000-000000000009", None]
