"""The user's pins win, in both sandboxes: real builds from PyPI wheels, real runs.

One connector pins the sets a new user tried (pydantic 1, an old typing_extensions, an
old pyarrow with numpy 1 and pandas 1.5, an old requests/urllib3 over the defaults); it
reports, as data, the version and location of every module it imports, so the test
reads what actually ran. A second pins a pyarrow newer than nothing but different from
the runtime's. pandas alone (pip then picks numpy 2, which pandas 1.5 cannot import
against) must fail the build, naming the pin, never at run time.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import write_connector

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SANDBOXES = ["process", "docker"]

REPORT = '''
import importlib, importlib.metadata, sys

MODULES = {MODULES!r}

def list_objects(context, metadata):
    yield {{"name": "env", "fingerprint": "1", "is_prefix": False}}

def read_bytes(context, metadata):
    yield "module,version,in_user_env\\n"
    for module, dist in MODULES:
        try:
            m = importlib.import_module(module)
        except ImportError:
            yield f"{{module}},absent,false\\n"
            continue
        where = getattr(m, "__file__", "") or ""
        yield (f"{{module}},{{importlib.metadata.version(dist)}},"
               f"{{str(where.startswith(sys.prefix)).lower()}}\\n")
{EXTRA}
'''

MIXED_PINS = ["pydantic==1.10.13", "typing_extensions==4.5.0", "pyarrow==14.0.2",
              "numpy==1.26.4", "pandas==1.5.3", "requests==2.25.1", "urllib3==1.26.5"]
MIXED_MODULES = [("pydantic", "pydantic"), ("typing_extensions", "typing_extensions"),
                 ("pyarrow", "pyarrow"), ("numpy", "numpy"), ("pandas", "pandas"),
                 ("requests", "requests"), ("urllib3", "urllib3"), ("idna", "idna"),
                 ("dateutil", "python-dateutil"), ("fastavro", "fastavro")]
# The pinned libraries used for real, not just imported: pydantic's v1 API, pandas on
# numpy 1.x, pyarrow 14 converting a pandas frame.
MIXED_USE = '''
def context(credentials):
    import pandas as pd, pyarrow as pa, pydantic

    class Row(pydantic.BaseModel):
        n: int

    frame = pd.DataFrame({"n": [Row(n=i).dict()["n"] for i in range(3)]})
    assert pa.Table.from_pandas(frame).num_rows == 3
    return {}
'''


def connector(tmp_path: Path, name: str, pins: list[str], modules: list[tuple[str, str]],
              extra: str = "") -> Path:
    code = REPORT.format(MODULES=modules, EXTRA=textwrap.dedent(extra))
    spec = f"name: {name}\ntenant: test\npackages: {pins!r}\n"
    return write_connector(tmp_path / name, code, spec)


def report(cli, path: Path, sandbox: str) -> dict[str, tuple[str, str]]:
    r, s = cli.refresh(path, sandbox=sandbox)
    assert r.returncode == 0, r.stderr
    assert s["failed"] == 0 and s["rows"] > 0
    return {row["module"]: (str(row["version"]), str(row["in_user_env"]).lower())
            for row in cli.rows(path)}


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_pins_win_over_the_runtime_and_the_defaults(tmp_path, cli, sandbox):
    path = connector(tmp_path, f"pins_{sandbox}", MIXED_PINS, MIXED_MODULES, MIXED_USE)
    got = report(cli, path, sandbox)
    for pin in MIXED_PINS:
        dist, version = pin.split("==")
        assert got[dist] == (version, "true"), (pin, got)
    assert got["idna"][0].startswith("2.")       # requests 2.25's idna<3, over the default 3.x
    assert got["dateutil"][1] == "true"          # a default package, still there
    assert got["fastavro"] == ("absent", "false")  # the runtime's own stack is not importable


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_pyarrow_other_than_the_runtimes(tmp_path, cli, sandbox):
    path = connector(tmp_path, f"arrow_{sandbox}", ["pyarrow==25.0.1"],
                     [("pyarrow", "pyarrow"), ("requests", "requests")])
    got = report(cli, path, sandbox)
    assert got["pyarrow"] == ("25.0.1", "true")
    assert got["requests"][1] == "true"  # the defaults are there without any pin of them


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_pin_that_does_not_import_fails_the_build_naming_it(tmp_path, cli, sandbox):
    path = connector(tmp_path, f"pandas_{sandbox}", ["pandas==1.5.3"], [("pandas", "pandas")])
    r, s = cli.refresh(path, sandbox=sandbox)
    assert r.returncode != 0
    assert "'pandas==1.5.3'" in r.stderr and "import pandas failed" in r.stderr, r.stderr
    assert "(user)" in r.stderr and "infra" not in r.stderr
