"""The output cap counts what rows decode to, and committed columns are plain.

A few KB of dictionary-encoded Parquet can stand for gigabytes of strings: counted by
encoded bytes it would be committed, and `show` would then decode all of it."""

from __future__ import annotations

PARQUET_CODE = '''
import io
import pyarrow as pa, pyarrow.parquet as pq

def list_objects(context, metadata):
    for name in {names!r}:
        yield {{"name": name, "fingerprint": "1"}}

def parquet(table):
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()

def read_bytes(context, metadata):
    name = metadata["name"]
    if name == "bomb":      # one 100 KB string, 20,000 times: about 2 GB decoded
        values = pa.array(["x" * 100_000]).dictionary_encode().take(pa.array([0] * 20_000))
    elif name == "dict":
        values = pa.array(["a", "b", "a"]).dictionary_encode()
    else:
        values = pa.array(["c", "d"])
    yield parquet(pa.table({{"v": values}}))
'''
# The connector writes Parquet with a pyarrow of its own environment: the runtime's is
# not importable from connector code.
PINS = "packages: ['pyarrow==26.0.1']\n"


def test_dictionary_bomb_hits_the_output_cap(connector, cli):
    c = connector(PARQUET_CODE.format(names=["bomb"]),
                  "name: bomb\nparser: {format: parquet}\nlimits: {max_output_bytes: 8m}\n"
                  + PINS)
    r, s = cli.refresh(c)
    assert r.returncode == 1, r.stderr
    assert "fragment 'bomb' failed (limit): output exceeded 8 MiB" in r.stderr, r.stderr
    assert s["read"] == 0 and s["rows"] == 0


def test_dictionary_and_plain_fragments_show_as_one_dataset(connector, cli):
    c = connector(PARQUET_CODE.format(names=["dict", "plain"]),
                  "name: mixed\nparser: {format: parquet}\n" + PINS)
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert sorted(row["v"] for row in cli.rows(c)) == ["a", "a", "b", "c", "d"]
    shown = cli("show", str(c))
    assert shown.returncode == 0, shown.stderr
    assert "dictionary" not in shown.stdout
