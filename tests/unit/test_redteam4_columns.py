"""Rows as wide as a tenant likes: one row of 100,000 columns is under a kilobyte of
output per column, well inside any output cap, yet the worker's own process turns it into
a Parquet file and a Delta schema (about 1 GB of the host's memory and 26 s; a million
columns would take a shared worker down). The host bounds the columns of a read's rows
(nested fields counted), and of the table its fragments together make."""

from __future__ import annotations

import pytest

from worker.column_types import MAX_COLUMNS

WIDE = """
def list_objects(c, m):
    for name in {names!r}:
        yield {{"name": name, "fingerprint": "1"}}

def read_bytes(c, m):
    yield m["name"]

def parser_function(reader, onNext):
    name = reader.read()
    onNext({row})
"""


def _wide(connector, name: str, row: str, names: tuple[str, ...] = ("a",)):
    return connector(WIDE.format(names=list(names), row=row),
                     f"name: {name}\nparser: {{format: custom}}\n", name=name)


def test_rows_wider_than_a_table_may_be_fail_naming_the_limit(connector, cli) -> None:
    c = _wide(connector, "wide", f"{{f'c{{i}}': i for i in range({MAX_COLUMNS + 1})}}")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout
    said = " ".join(r.stderr.split())
    assert (f"the rows have more than {MAX_COLUMNS} columns (nested fields counted), the "
            "most a table may have") in said, said
    assert s["read"] == 0 and s["failed"] == 1, s
    assert not (cli.output / "default" / "wide" / "_delta_log").exists()


def test_nested_fields_count_as_columns(connector, cli) -> None:
    c = _wide(connector, "deep", f"{{'s': {{f'k{{i}}': i for i in range({MAX_COLUMNS})}}}}")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout
    said = " ".join(r.stderr.split())
    assert f"the rows have more than {MAX_COLUMNS} columns (nested fields" in said, said


def test_rows_at_the_limit_are_kept(connector, cli) -> None:
    # _fragment is the host's column: the data may have one fewer
    c = _wide(connector, "atlimit", f"{{f'c{{i}}': i for i in range({MAX_COLUMNS - 1})}}")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 0, r.stderr
    assert s["rows"] == 1, s


def test_fragments_too_wide_only_together_commit_nothing(connector, cli) -> None:
    half = MAX_COLUMNS // 2 + 1
    c = _wide(connector, "union", f"{{f'{{name}}{{i}}': i for i in range({half})}}",
              names=("a", "b"))
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout
    said = " ".join(r.stderr.split())
    assert (f"fragments cannot share the Delta table: together they have {2 * half + 1} "
            f"columns (nested fields counted), over the {MAX_COLUMNS} a table may have"
            ) in said, said
    assert not (cli.output / "default" / "union" / "_delta_log").exists()


@pytest.mark.parametrize("n", [MAX_COLUMNS + 1])
def test_a_declared_schema_wider_than_a_table_may_be_is_refused(connector, cli, n) -> None:
    columns = "".join(f"  - {{name: c{i}}}\n" for i in range(n))
    c = connector(WIDE.format(names=["a"], row="{}"), f"name: declared\nschema:\n{columns}")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    said = " ".join(r.stderr.split())
    assert (f"schema.columns: {n} columns declared, over the {MAX_COLUMNS} a table may "
            "have") in said, said


# one fragment, one row: ROW is the row's Python dict literal
ONE_ROW = """
def list_objects(c, m):
    yield {"name": "a", "fingerprint": "1"}

def read_bytes(c, m):
    yield "x"

def parser_function(reader, onNext):
    reader.read()
    onNext(ROW)
"""


@pytest.mark.parametrize(("row", "where"), [('{"id": 1, "s": {}}', "'s'"),
                                             ('{"id": 1, "o": {"inner": {}}}', "'o.inner'")])
def test_an_empty_object_is_the_datas_failure_not_the_platforms(connector, cli, row,
                                                                where) -> None:
    # Parquet cannot store a struct of no fields; the host's writer raised, and the
    # fragment failed as `infra`: retried by the queue, and blamed on the platform.
    c = connector(ONE_ROW.replace("ROW", row), "name: empty\nparser: {format: custom}\n")
    r, s = cli.refresh(c, sandbox="process")
    assert r.returncode == 1, r.stdout
    said = " ".join(r.stderr.split())
    assert "failed (data)" in said, said
    assert (f"column {where} is an object with no fields, which Parquet cannot store"
            in said), said
