"""Schema inference: a `schema:` block (names, types, nullability) from sample batches.

Host only. Typed input (Parquet, Avro, JSON numbers) keeps its type, mapped to the
nearest declared type (`worker.column_types.type_name_for`); text columns (CSV, JSON
strings) take the first of int64, float64, bool, date, timestamp that every sampled
value converts to, else string. A column is `nullable: false` only when no sampled row
lacked it or held null: the sample decides, so widen by hand what the sample cannot
know.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from worker.column_types import type_name_for

_TEXT_CANDIDATES: tuple[tuple[str, pa.DataType], ...] = (
    ("int64", pa.int64()), ("float64", pa.float64()), ("bool", pa.bool_()),
    ("date", pa.date32()), ("timestamp", pa.timestamp("us")),
)


class InferredColumn(BaseModel):
    name: str
    type: str
    nullable: bool


def _text_type(values: pa.Array) -> str:
    from worker.runtime.convert import ARROW_ERRORS, converter
    from worker.spec import Column

    present = pc.utf8_trim_whitespace(values.drop_null())
    if len(present) == 0:
        return "string"
    for name, target in _TEXT_CANDIDATES:
        try:
            if name == "timestamp":
                # conformance's own rules: values with and without an offset may mix
                converter(Column(name="_", type=name), target)(present)
            else:
                pc.cast(present, target)
        except ARROW_ERRORS:
            continue
        return name
    return "string"


def infer_columns(tables: list[pa.Table]) -> list[InferredColumn]:
    """Columns in first-seen order over every sampled table."""
    order: dict[str, None] = {}
    for t in tables:
        order.update(dict.fromkeys(t.column_names))
    out: list[InferredColumn] = []
    for name in order:
        chunks: list[pa.ChunkedArray] = []
        nullable = False
        for t in tables:
            if name not in t.column_names:
                nullable = nullable or t.num_rows > 0
                continue
            col = t.column(name)
            nullable = nullable or col.null_count > 0
            chunks.append(col)
        types = {c.type for c in chunks if not pa.types.is_null(c.type)}
        if not types:
            out.append(InferredColumn(name=name, type="string", nullable=True))
            continue
        if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
            values = pa.concat_arrays([a.cast(pa.string()) for c in chunks for a in c.chunks])
            out.append(InferredColumn(name=name, type=_text_type(values), nullable=nullable))
            continue
        names = {type_name_for(t) for t in types}
        if len(names) > 1:  # fragments disagree: the widest that holds both, else text
            numeric = {"int32", "int64", "float32", "float64"}
            name_ = ("float64" if names <= numeric and names & {"float32", "float64"}
                     else "int64" if names <= numeric else "string")
        else:
            (name_,) = names
        out.append(InferredColumn(name=name, type=name_, nullable=nullable))
    return out


def schema_yaml(columns: list[InferredColumn]) -> str:
    """A `schema:` block ready to paste into connector.yaml."""
    lines = ["schema:", "  columns:"]
    for c in columns:
        kind = f'"{c.type}"' if c.type.startswith("decimal") else c.type
        lines.append(f"    - {{name: {json.dumps(c.name)}, type: {kind}"
                     + ("" if c.nullable else ", nullable: false") + "}")
    return "\n".join(lines) + "\n"
