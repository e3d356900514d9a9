"""What pyarrow's JSON reader is told about a fragment's fields, and where its answer
is not taken. Values are what the text says; the reader decides alone only where that
holds:
- it reads an integer past int64 (or past 2^53 beside floats) as the nearest float, so a
  block with a float of magnitude 2^53 or more, where some number is written with 16
  digits or more (`1e20` is a float as written), is read line by line instead (exact
  Python ints: kept in a decimal or string column, rejected naming them in an int64
  one, a fragment error naming them without a declared type);
- it reads a number as a float: a declared decimal column is read as its decimal
  (exact, or refused and the block read line by line with `Decimal` numbers);
- it turns strings that look like dates into timestamps (an offset converted away, a
  date made a midnight): such fields are read again as the strings they are, and from
  then on for the rest of the fragment. Only a declared type converts text.
"""

from __future__ import annotations

import decimal
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from worker.column_types import arrow_type
from worker.runtime.rejects import RowRejects
from worker.spec import ParserSpec

_EXACT_FLOAT = 2.0 ** 53  # every integer up to this magnitude is exact as a float64
# A number written with 16 digits or more before any point or exponent: one a float64
# may not hold (1e20 may: written so, it is a float to begin with).
_LONG_NUMBER = re.compile(rb"[:\[,]\s*-?\d{16}")
Path = tuple[str, ...]


class Fields:
    """What pyarrow's JSON reader is told about a fragment's fields, and what it may not
    decide alone (see the module docstring)."""

    PROBE = 64 << 10  # the first block's head, read once to learn its timestamp fields

    def __init__(self, spec: ParserSpec, rejects: RowRejects | None) -> None:
        columns = rejects.schema.columns if rejects is not None else []
        decimals = {c.source_name: c.type for c in columns if c.type.startswith("decimal")}
        # top-level decimal columns: pyarrow reads them as their decimal, exactly
        self.decimals = {n: arrow_type(t) for n, t in decimals.items()
                         if not (spec.flatten and spec.separator in n)}
        # flattened decimal columns it reads as floats: those blocks go line by line
        self.flat_decimals = set(decimals) - set(self.decimals)
        self.separator = spec.separator if spec.flatten else None
        # top-level field -> the type that reads, as text, what pyarrow took for timestamps
        self.text: dict[str, pa.DataType] = {}
        self.parse_float: Callable[[str], Any] | None = decimal.Decimal if decimals else None
        self.order: dict[str, int] = {}  # fields in first-seen order (explicit ones lead)
        self.probed = False
        self.schema = self._schema()

    def _schema(self) -> pa.Schema | None:
        fields = {**self.decimals, **self.text}
        return pa.schema(list(fields.items())) if fields else None

    def _read(self, blob: bytes) -> pa.Table | None:
        opts = (None if self.schema is None else
                pajson.ParseOptions(explicit_schema=self.schema,
                                    unexpected_field_behavior="infer"))
        try:
            return pajson.read_json(
                io.BytesIO(blob), parse_options=opts,
                read_options=pajson.ReadOptions(block_size=max(len(blob) + 1, 1 << 20)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None  # duplicate keys, a value changing type, a bad line, ...

    def _learn(self, table: pa.Table) -> bool:
        """Remembers `table`'s field order and its timestamp fields (to read as text);
        whether there were new ones."""
        for name in table.column_names:
            self.order.setdefault(name, len(self.order))
        found = False
        for f in table.schema:
            text = _as_text(f.type)
            if text is not None:
                old = self.text.get(f.name)
                self.text[f.name] = text if old is None else _merge(old, text)
                found = True
        if found:
            self.schema = self._schema()
        return found

    def read(self, blob: bytes) -> pa.Table | None:
        """The block as pyarrow reads it, or None when it must be read line by line."""
        if not self.probed:
            # Learn the first rows' timestamp fields from a small head, not the whole
            # block read twice.
            self.probed = True
            cut = blob.rfind(b"\n", 0, self.PROBE) + 1
            head = self._read(blob[:cut]) if 0 < cut < len(blob) else None
            if head is not None:
                self._learn(head)
        while True:
            table = self._read(blob)
            if table is None:
                return None
            if not self._learn(table):
                break
        if self.schema is not None:
            table = self._present(table, blob)
            rank = self.order
            names = sorted(table.column_names, key=lambda n: rank.get(n, len(rank)))
            if names != table.column_names:
                table = table.select(names)
        if (_float_past_exact(table) and _LONG_NUMBER.search(blob) is not None) or (
                self.flat_decimals and self.separator is not None
                and any(self.separator.join(p) in self.flat_decimals
                        and pa.types.is_floating(t) for p, t in _leaves(table.schema))):
            return None
        return table

    def _present(self, table: pa.Table, blob: bytes) -> pa.Table:
        """`table` without the fields the explicit schema added but the block lacks (a
        declared column no row carries is then reported as missing, as before)."""
        for name in self.schema.names if self.schema is not None else []:
            col = table.column(name)
            if (col.null_count == len(col)
                    and json.dumps(name, ensure_ascii=False).encode() not in blob):
                table = table.drop_columns([name])
        return table


def _as_text(t: pa.DataType) -> pa.DataType | None:
    """The part of type `t` that holds timestamps, with string for each; None if none.
    (Given to the reader, it pins only those fields; the rest it still infers.)"""
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_struct(t):
        kids = [(f.name, k) for f in t if (k := _as_text(f.type)) is not None]
        return pa.struct(kids) if kids else None
    if pa.types.is_list(t):
        inner = _as_text(t.value_type)
        return pa.list_(inner) if inner is not None else None
    return None


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """Two `_as_text` types of one field: the fields of both."""
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        kids = {f.name: f.type for f in a}
        for f in b:
            kids[f.name] = _merge(kids[f.name], f.type) if f.name in kids else f.type
        return pa.struct(list(kids.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge(a.value_type, b.value_type))
    return b


def _leaves(schema: pa.Schema) -> Iterator[tuple[Path, pa.DataType]]:
    """(path, type) of every field that is not a struct, structs' children included."""
    def walk(path: Path, t: pa.DataType) -> Iterator[tuple[Path, pa.DataType]]:
        if pa.types.is_struct(t):
            for f in t:
                yield from walk((*path, f.name), f.type)
        else:
            yield path, t

    for f in schema:
        yield from walk((f.name,), f.type)


def _float_past_exact(table: pa.Table) -> bool:
    """Whether a float value (at any depth) is 2^53 or more in magnitude: an integer
    there may have been rounded to it."""
    def arrays(arr: pa.Array) -> Iterator[pa.Array]:
        t = arr.type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                yield from arrays(arr.field(i))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            yield from arrays(arr.flatten())
        elif pa.types.is_floating(t):
            yield arr

    for col in table.columns:
        if not _has_float(col.type):
            continue
        for chunk in col.chunks:
            for arr in arrays(chunk):
                top = pc.max(pc.abs(arr)).as_py()
                if top is not None and top >= _EXACT_FLOAT:
                    return True
    return False


def _has_float(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_float(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_float(t.value_type)
    return False
