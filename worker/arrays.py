"""Arrow arrays built from Python values without importing pandas.

`pa.array(list)` first asks whether its input is a pandas object, and to ask it imports
pandas when pandas is installed: ~50 MiB and 0.1-0.5 s, once per process. Neither the
host (the CLI, workers) nor the sandbox runtime hands data to pandas. Two defences:
`skip_pandas_probe()` makes that one-time probe find nothing (the CLI and the runtime
call it at start; an explicit `to_pandas()` still imports pandas), and the builders below
take paths that never ask (pyarrow's string builder, raw buffers), so the listing and the
diff stay pandas-free in code that calls them without the CLI (library use, tests).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Iterable

import pyarrow as pa
from pyarrow.lib import StringBuilder


def strings(values: Iterable[str | None]) -> pa.StringArray:
    """A string array of `values` (None is null)."""
    b = StringBuilder()
    b.append_values(values)
    return b.finish()


def int64s(values: Iterable[int]) -> pa.Int64Array:
    buf = array.array("q", values)
    return pa.Array.from_buffers(pa.int64(), len(buf), [None, pa.py_buffer(buf)])


def repeat_string(value: str, n: int) -> pa.StringArray:
    """`value` n times."""
    return pa.repeat(strings([value])[0], n)


def string_scalar(value: str) -> pa.StringScalar:
    """A string scalar, for compute functions given a constant (they would convert a str
    with `pa.scalar`, which asks the same question as `pa.array`)."""
    return strings([value])[0]


class _NoPandas:
    """A meta path finder under which `import pandas` fails."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is skipped here", name=name)


def skip_pandas_probe() -> None:
    """Make pyarrow's one-time "is pandas installed?" probe find nothing."""
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # the probe runs here, once per process
    finally:
        sys.meta_path.remove(finder)
