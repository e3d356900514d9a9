"""The benchmark workload and connectors.

CSV: 8 fragments x 100,000 rows, 8 columns (id int, ts ISO timestamp, name short
string, amount float 2 dp, qty int, flag true/false, category one of 10, note 30
chars), about 71 MB in all. The bytes are generated once on the host and written into
the connector folder (so they are part of the Docker image too); the connector's
context() reads them into 1 MiB chunks, and read_bytes yields those chunks: producing
a fragment's bytes costs a generator step per MiB. That cost is measured separately
(`producer_cost`).
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from functools import cache
from pathlib import Path
from types import ModuleType

COLUMNS = ["id", "ts", "name", "amount", "qty", "flag", "category", "note"]
CATEGORIES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
              "india", "juliet"]
ROWS_PER_FRAGMENT = 100_000
FRAGMENTS = 8
CHUNK = 1 << 20

SCHEMA_YAML = """\
schema:
  - {name: id, type: int64, nullable: false}
  - {name: ts, type: timestamp}
  - {name: name, type: string}
  - {name: amount, type: float64}
  - {name: qty, type: int64}
  - {name: flag, type: bool}
  - {name: category, type: string}
  - {name: note, type: string}
"""


@cache
def csv_bytes(rows: int = ROWS_PER_FRAGMENT, seed: int = 5) -> bytes:
    """One fragment's CSV (header + `rows` rows), deterministic."""
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    base = 1767225600  # 2026-01-01T00:00:00Z
    out = [",".join(COLUMNS)]
    for i in range(rows):
        t = time.gmtime(base + i * 37)
        ts = (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
              f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}")
        name = "".join(rnd.choices(letters, k=rnd.randint(4, 10)))
        note = "".join(rnd.choices(letters + "     ", k=30)).strip() or "n"
        out.append(f"{i},{ts},{name},{rnd.uniform(0, 10000):.2f},{rnd.randint(1, 500)},"
                   f"{'true' if rnd.random() < 0.5 else 'false'},{rnd.choice(CATEGORIES)},"
                   f"{note}")
    return ("\n".join(out) + "\n").encode()


# --------------------------------------------------------------------------- connectors

CSV_CODE = f"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = {CHUNK}


def context(credentials):
    # Precomputed bytes: reading them once per session is the connector's whole cost.
    data = (HERE / "data.csv").read_bytes()
    return {{"chunks": [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]}}


def list_objects(context, metadata):
    for i in range(int((HERE / "fragments.txt").read_text())):
        yield {{"name": f"part-{{i:03d}}.csv", "fingerprint": "v1"}}


def read_bytes(context, metadata):
    yield from context["chunks"]
"""

CUSTOM_CODE = CSV_CODE + f"""

COLS = {COLUMNS!r}


def parser_function(reader, onNext):
    next(reader)  # header
    cols = COLS
    for line in reader:
        onNext(dict(zip(cols, line.rstrip("\\n").split(","))))
"""

TINY_CODE = """
from pathlib import Path

HERE = Path(__file__).resolve().parent


def list_objects(context, metadata):
    for i in range(int((HERE / "fragments.txt").read_text())):
        yield {"name": f"tiny-{i:05d}", "fingerprint": "v1"}


def read_bytes(context, metadata):
    yield b"id,name\\n" + metadata["name"][5:].encode() + b"," + metadata["name"].encode() + b"\\n"
"""

TINY_SPEC = """\
name: bench_tiny
schema:
  - {name: id, type: int64}
  - {name: name, type: string}
"""

BIG_CODE = f"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = {CHUNK}


def context(credentials):
    data = (HERE / "data.csv").read_bytes()
    header, _, body = data.partition(b"\\n")
    lines = body.splitlines(keepends=True)
    block = bytearray()
    i = 0
    while len(block) < CHUNK:
        block += lines[i % len(lines)]
        i += 1
    return {{"header": header + b"\\n", "block": bytes(block)}}


def list_objects(context, metadata):
    yield {{"name": "big.csv", "fingerprint": (HERE / "size.txt").read_text()}}


def read_bytes(context, metadata):
    total = int((HERE / "size.txt").read_text())
    yield context["header"]
    block = context["block"]
    sent = 0
    while sent < total:
        yield block
        sent += len(block)
"""

LISTING_CODE = """
from pathlib import Path

HERE = Path(__file__).resolve().parent


def context(credentials):
    return {"gen": credentials or "1"}


def list_objects(context, metadata):
    gen = context["gen"]
    n = int((HERE / "fragments.txt").read_text())
    step = max(1, n // 100)  # 100 fragments change with the generation
    for i in range(n):
        fp = f"v1-{gen}" if i % step == 0 else "v1"
        yield {"name": f"obj/{i // 1000:03d}/{i:06d}.csv", "fingerprint": fp}


def read_bytes(context, metadata):
    yield b"id\\n" + str(int(metadata["name"][-10:-4])).encode() + b"\\n"
"""

LISTING_SPEC = """\
name: bench_listing
schema:
  - {name: id, type: int64}
"""


def csv_spec(name: str, extra: str = "") -> str:
    return f"name: {name}\nparser: {{format: xsv}}\n{SCHEMA_YAML}{extra}"


def custom_spec(name: str) -> str:
    return f"name: {name}\nparser: {{format: custom, reader: text}}\n"


def load_module(folder: Path) -> ModuleType:
    """Import a generated connector in-process (for baselines only)."""
    name = f"bench_conn_{folder.name}"
    spec = importlib.util.spec_from_file_location(name, folder / "connector.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def producer_cost(folder: Path, fragments: int) -> tuple[float, float]:
    """(context() seconds, read_bytes seconds for `fragments` fragments), in-process."""
    mod = load_module(folder)
    t0 = time.perf_counter()
    ctx = mod.context("")
    t1 = time.perf_counter()
    n = 0
    for i in range(fragments):
        for chunk in mod.read_bytes(ctx, {"name": f"part-{i:03d}.csv", "fingerprint": "v1"}):
            n += len(chunk)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1
