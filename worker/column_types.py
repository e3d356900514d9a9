"""The column types a schema may declare, and the Arrow type each is stored as.

The one table both sides use: `worker.spec` validates type names against it and the
sandbox runtime builds its Arrow schema from it. pyarrow is imported only when an
Arrow type is asked for, so validating a spec stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Columns a table may have, nested fields counted (a struct of 3 fields is 4). A row
# of 100,000 one-byte columns is a small output but costs the worker's own process about
# 1 GB to write as Parquet and commit as a Delta schema: width is bounded apart from size.
MAX_COLUMNS = 10_000

# name -> Arrow type, built from the pyarrow module on first use
_TABLE: dict[str, Callable[[ModuleType], pa.DataType]] = {
    "string": lambda pa: pa.string(),
    "int32": lambda pa: pa.int32(),
    "int64": lambda pa: pa.int64(),
    "float32": lambda pa: pa.float32(),
    "float64": lambda pa: pa.float64(),
    "bool": lambda pa: pa.bool_(),
    "date": lambda pa: pa.date32(),
    "timestamp": lambda pa: pa.timestamp("us", tz="UTC"),  # always UTC microseconds
    "binary": lambda pa: pa.binary(),
    "json": lambda pa: pa.string(),  # JSON text
}
SIMPLE_TYPES: tuple[str, ...] = tuple(_TABLE)
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
MAX_DECIMAL_PRECISION = 38


def normalise(type_name: str) -> str:
    """A declared type name in canonical spelling; ValueError naming the choices."""
    v = type_name.strip().lower()
    if v in _TABLE:
        return v
    m = _DECIMAL.match(v)
    if m:
        precision, scale = int(m.group(1)), int(m.group(2))
        if not 0 < precision <= MAX_DECIMAL_PRECISION:
            raise ValueError(f"{v}: precision {precision} is not 1 to "
                             f"{MAX_DECIMAL_PRECISION}")
        if scale > precision:
            raise ValueError(f"{v}: scale {scale} is larger than its precision {precision} "
                             "(precision counts every digit, scale those after the point)")
        return f"decimal({precision},{scale})"
    raise ValueError(
        f"unknown type {v!r}; expected one of {', '.join(SIMPLE_TYPES)} or decimal(p,s)"
    )


def decimal_precision_scale(type_name: str) -> tuple[int, int] | None:
    m = _DECIMAL.match(type_name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def arrow_type(type_name: str) -> pa.DataType:
    """The Arrow type for a canonical type name (see `normalise`)."""
    import pyarrow as pa

    if type_name in _TABLE:
        return _TABLE[type_name](pa)
    ps = decimal_precision_scale(type_name)
    if ps is not None:
        return pa.decimal128(*ps)
    raise ValueError(f"unknown type {type_name!r}")


def type_name_for(t: pa.DataType) -> str:
    """The declared type that holds Arrow type `t` losslessly (for schema inference)."""
    import pyarrow as pa

    if pa.types.is_decimal(t):
        return f"decimal({min(t.precision, MAX_DECIMAL_PRECISION)},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int32" if t.bit_width <= 32 and pa.types.is_signed_integer(t) else "int64"
    if pa.types.is_floating(t):
        return "float32" if t.bit_width <= 32 else "float64"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_nested(t):
        return "json"
    return "string"
