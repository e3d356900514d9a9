"""A refresh never loads pandas, in the host or in the runtime.

pyarrow imports pandas, when it is installed, the first time it converts Python objects
to an array (to ask whether they are a pandas object): 0.2-0.5 s once per process, which
a CLI refresh and every process-sandbox session would pay though neither uses pandas.
pandas is a dev dependency (the README's pandas snippet is tested), so these tests see
it installed, as a user's environment with pandas would.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, write_connector

CODE = """
def context(credentials):
    return {"gen": credentials or "1"}

def list_objects(context, metadata):
    for i in range(50):
        yield {"name": f"f{i:02d}", "fingerprint": context["gen"] if i < 3 else "1",
               "size": i}

def read_bytes(context, metadata):
    yield f"id,name\\n{metadata['size']},x{metadata['size']}\\n"
"""
SPEC = """
name: nopandas
schema:
  - {name: id, type: int64}
  - {name: name, type: string}
"""


def test_pandas_is_installed_here():
    # Without it the tests below could not fail.
    assert importlib.util.find_spec("pandas") is not None


def test_a_local_refresh_does_not_import_pandas_in_the_host(tmp_path: Path):
    folder = write_connector(tmp_path / "c", CODE, SPEC)
    script = textwrap.dedent(f"""
        import sys
        from worker.refresh import refresh
        from worker.sandbox.process import ProcessSandbox
        from worker.sink import Output
        from worker.spec import load_connector
        from worker.state.sqlite import SqliteState

        c = load_connector({str(folder)!r})
        state, out = SqliteState({str(tmp_path / "state.sqlite")!r}), Output({str(tmp_path)!r})
        first = refresh(c, ProcessSandbox(), state, out, 2, credentials="1")
        second = refresh(c, ProcessSandbox(), state, out, 2, credentials="2")
        print(first.read, second.read, second.skipped, "pandas" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["50", "3", "47", "False"], r.stdout


def test_the_process_sandbox_runtime_does_not_load_pandas(tmp_path: Path):
    from worker.sandbox.process import ProcessSandbox
    from worker.spec import load_connector

    session = ProcessSandbox().open(load_connector(write_connector(tmp_path / "c", CODE,
                                                                   SPEC)), "1")
    try:
        listed = session.list()
        assert len(listed) == 50
        rows = sum(b.num_rows for b in session.read(next(iter(listed))))
        assert rows == 1
        pid = session._ch._proc.pid  # the runtime process
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/pyarrow/" in maps  # the check sees the runtime's libraries
        assert "/pandas/" not in maps
    finally:
        session.close()
