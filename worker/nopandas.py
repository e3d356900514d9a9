"""pyarrow without its pandas probe.

pyarrow imports pandas, when it is installed, on its first conversion from Python
objects (`pa.array([...])`, `from_pylist`): ~50 MiB and 0.1-0.5 s of start-up in a
process that never hands data to pandas (the sandbox runtime, the CLI). Skipping the
probe changes nothing else: an explicit `to_pandas()` still imports pandas.
"""

from __future__ import annotations

import sys

import pyarrow as pa


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
