"""Arrow arrays built from Python values without importing pandas.

`pa.array(list)` first asks whether its input is a pandas object, and to ask it imports
pandas when pandas is installed: 0.2-0.5 s, once per process. Neither the host's
refresh nor the sandbox runtime uses pandas, yet both would pay that on their first
listing (a CLI refresh and every process-sandbox session start). These builders take the
paths that never ask: pyarrow's string builder and raw buffers. The listing and the diff
use them; code that runs once per fragment or later may use `pa.array` as it likes.
"""

from __future__ import annotations

import array
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
