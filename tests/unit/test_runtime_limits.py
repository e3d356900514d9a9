"""The runtime keeps its threads and memory within the sandbox's limits
(worker/runtime/limits.py), in a fresh interpreter each: the settings are per process."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_arrow_pools_are_capped_to_the_cpu_limit() -> None:
    out = run_python(
        "import pyarrow as pa\n"
        "from worker.runtime import limits\n"
        "limits.apply(cpus=1)\n"
        "print(pa.cpu_count(), pa.io_thread_count())\n")
    assert out.split() == ["1", "1"]


def test_runtime_conversions_do_not_import_pandas_but_pandas_still_works() -> None:
    # pyarrow probes for pandas (~50 MiB, 0.1-0.5 s) on its first conversion from Python
    # objects when pandas is installed; the runtime never hands Arrow data to pandas.
    out = run_python(
        "import sys, pyarrow as pa\n"
        "from worker.runtime import limits\n"
        "limits.apply(cpus=2)\n"
        "pa.array([1, 2]); pa.RecordBatch.from_pylist([{'a': 'x'}])\n"
        "print('pandas' in sys.modules)\n"
        "print(pa.table({'a': [1]}).to_pandas()['a'].tolist())\n")
    assert out.split() == ["False", "[1]"]
