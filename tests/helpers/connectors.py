"""Connectors whose "remote" a test controls, for local and queue mode alike.

A deployed bundle is a snapshot of the folder, so what the remote holds lives outside
it: a plan file at an absolute path the test rewrites (name -> fingerprint, rows, an
optional sleep; rows "FAIL" makes the read raise), and a log with one line per
read_bytes call, to count reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_connector
from worker.spec import Connector, load_connector

PLAN_CODE = '''
import json, pathlib, time
PLAN = pathlib.Path({plan!r})
READS = pathlib.Path({reads!r})

def list_objects(context, metadata):
    for name, spec in json.loads(PLAN.read_text()).items():
        yield {{"name": name, "fingerprint": spec["fp"]}}

def read_bytes(context, metadata):
    name = metadata["name"]
    spec = json.loads(PLAN.read_text())[name]
    with open(READS, "a") as f:
        f.write(name + "\\n")
    print("reading", name)  # lands in the fragment's log
    time.sleep(spec.get("sleep", 0))
    gate = spec.get("gate")  # a file the test creates when this read may finish
    deadline = time.monotonic() + 300
    while gate and not pathlib.Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if spec["rows"] == "FAIL":
        raise RuntimeError("remote said no for " + name)
    yield "id,frag\\n"
    for i in spec["rows"]:
        yield f"{{i}},{{name}}\\n"
'''

GEN_CODE = '''
import pathlib
READS = pathlib.Path({reads!r})

def list_objects(context, metadata):
    for i in range({n}):
        yield {{"name": f"g{{i:05d}}", "fingerprint": "1"}}

def read_bytes(context, metadata):
    with open(READS, "a") as f:
        f.write(metadata["name"] + "\\n")
    yield "id\\n" + str(int(metadata["name"][1:])) + "\\n"
'''

SPEC = """
name: {name}
tenant: {tenant}
schema:
  - {{name: id, type: int64}}
{extra}
"""
FRAG_COLUMN = "  - {name: frag, type: string}\n"


class PlanConnector:
    def __init__(self, root: Path, name: str, tenant: str, extra_spec: str = "",
                 code: str = PLAN_CODE, files: dict[str, str] | None = None,
                 spec: str | None = None) -> None:
        """`spec`: the whole connector.yaml instead of the default (id, frag columns)."""
        self.name, self.tenant = name, tenant
        base = root / f"{tenant}-{name}"
        base.mkdir(parents=True, exist_ok=True)
        self.plan_file, self.reads_file = base / "plan.json", base / "reads.log"
        self.reads_file.touch()
        if spec is None:
            spec = SPEC.format(name=name, tenant=tenant, extra="")
            spec = spec.rstrip("\n") + "\n" + FRAG_COLUMN + extra_spec
        self.folder = write_connector(
            base / "connector", code.format(plan=str(self.plan_file),
                                            reads=str(self.reads_file)), spec, files)

    def set(self, plan: dict) -> None:
        self.plan_file.write_text(json.dumps(plan))

    def reads(self) -> list[str]:
        return self.reads_file.read_text().split()


def gen_connector(root: Path, name: str, tenant: str, n: int) -> tuple[Path, Path]:
    base = root / f"{tenant}-{name}"
    reads = base / "reads.log"
    base.mkdir(parents=True, exist_ok=True)
    reads.touch()
    folder = write_connector(base / "connector", GEN_CODE.format(reads=str(reads), n=n),
                             SPEC.format(name=name, tenant=tenant, extra=""))
    return folder, reads


def ids(rows: list[dict]) -> list[int]:
    """The `id` column of a dataset's rows, sorted (row order is not part of the contract)."""
    return sorted(r["id"] for r in rows)


VERSIONED_CODE = '''
VERSION = {version}
def list_objects(c, m):
    yield {{"name": "a", "fingerprint": "1"}}
def read_bytes(c, m):
    yield "version\\n{version}\\n"
'''


def versioned(folder: Path, tenant: str, name: str, n: int) -> Connector:
    """Version `n` of a connector (its one row says `n`): a distinct code image each."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connector.yaml").write_text(f"name: {name}\ntenant: {tenant}\n")
    (folder / "connector.py").write_text(VERSIONED_CODE.format(version=n))
    return load_connector(folder)
