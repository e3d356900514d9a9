"""`connector infer`: a schema block from the first fragments."""

from __future__ import annotations

import pyarrow as pa
import yaml

from tests.conftest import ROOT
from worker.infer import infer_columns, schema_yaml
from worker.spec import Schema


def test_text_columns_take_the_narrowest_type_every_value_fits() -> None:
    a = pa.table({"id": ["1", "2"], "x": ["1.5", "2"], "ok": ["true", None],
                  "day": ["2026-01-03", "2026-01-04"], "at": ["2026-01-03T10:00:00", None],
                  "s": ["a", "1"]})
    b = pa.table({"id": ["3"], "n": pa.array([7], pa.int32())})
    got = {c.name: (c.type, c.nullable) for c in infer_columns([a, b])}
    assert got == {"id": ("int64", False), "x": ("float64", True), "ok": ("bool", True),
                   "day": ("date", True), "at": ("timestamp", True), "s": ("string", True),
                   "n": ("int32", True)}


def test_block_is_valid_connector_yaml() -> None:
    t = pa.table({"amount": pa.array([1], pa.decimal128(10, 2)), "odd name": ["x"],
                  "tags": pa.array([[1]], pa.list_(pa.int64()))})
    parsed = yaml.safe_load(schema_yaml(infer_columns([t])))
    schema = Schema.model_validate(parsed["schema"])
    assert [(c.name, c.type, c.nullable) for c in schema.columns] == [
        ("amount", "decimal(10,2)", False), ("odd name", "string", False),
        ("tags", "json", False)]


def test_infer_command_on_an_example(cli) -> None:
    r = cli("infer", str(ROOT / "examples" / "blobs"), "--sandbox", "process")
    assert r.returncode == 0, r.stderr
    cols = {c["name"]: c for c in yaml.safe_load(r.stdout)["schema"]["columns"]}
    assert cols["order_id"] == {"name": "order_id", "type": "int64", "nullable": False}
    assert cols["ordered_at"]["type"] == "timestamp"
    assert cols["shipped"] == {"name": "shipped", "type": "bool"}  # an empty cell: nullable
