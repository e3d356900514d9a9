"""The README's "Reading your data" snippets, run against a refreshed example dataset."""

from __future__ import annotations

import re
from decimal import Decimal

from tests.conftest import ROOT


def snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Reading your data", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_duckdb_polars_and_pandas_read_the_dataset_as_documented(cli):
    r, s = cli.refresh(ROOT / "examples" / "blobs")
    assert r.returncode == 0, r.stderr
    code = snippets()
    assert len(code) == 3
    dataset = str(cli.output / "default" / "blobs")
    scopes: list[dict] = []
    for block in code:
        scopes.append({})
        exec(block.replace("data/default/blobs", dataset), scopes[-1])  # our own README
    duck, polars, pandas = scopes
    assert dict(duck["totals"])["alice"] == Decimal("19.99")
    assert polars["df"].height == s["rows"]
    assert set(polars["df"].columns) >= {"order_id", "customer", "_fragment"}
    assert len(pandas["df"]) == len(pandas["first"]) == s["rows"]
