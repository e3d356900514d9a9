"""One refresh's staged fragment versions, held as Arrow columns.

A refresh of 100,000 fragments stages 100,000 versions; its commit reads them once and
needs their names, files and counts. Seven arrays hold that in a few bytes a fragment
where a `Commit` model per fragment took about a kilobyte; a model is built only for
the few the caller asks for (`get`) or one batch at a time (`batches`), when state is
applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from worker.arrays import int64s, string_scalar, strings
from worker.models import Commit

COLUMNS = ("name", "fingerprint", "path", "rows", "size", "rejected", "defaulted")
SCHEMA = pa.schema([("name", pa.string()), ("fingerprint", pa.string()),
                    ("path", pa.string()), ("rows", pa.int64()), ("size", pa.int64()),
                    ("rejected", pa.int64()), ("defaulted", pa.int64())])
_TEXT = 3  # the first three columns are text


class DataFile(NamedTuple):
    """A fragment version's file, as a table version adds it."""

    path: str
    size: int
    rows: int


class Staged:
    """Staged versions by name (one per name: staging again replaced the earlier)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table.select(list(COLUMNS))
        self._index: dict[str, int] | None = None

    @classmethod
    def empty(cls) -> Staged:
        return cls(SCHEMA.empty_table())

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str, int, int, int, int]]) -> Staged:
        """From (name, fingerprint, path, rows, size, rejected, defaulted) tuples."""
        cols = list(zip(*rows, strict=True)) or [()] * len(COLUMNS)
        arrays = [strings(c) if i < _TEXT else int64s(int(x or 0) for x in c)
                  for i, c in enumerate(cols)]
        return cls(pa.Table.from_arrays(arrays, schema=SCHEMA))

    @classmethod
    def from_json(cls, docs: Iterable[bytes | str]) -> Staged:
        """From `Commit` JSON documents (one object each, no newline inside: JSON
        escapes them), parsed by Arrow's JSON reader rather than into models."""
        data = b"\n".join(d.encode() if isinstance(d, str) else d for d in docs)
        if not data:
            return cls.empty()
        opts = pajson.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
        table = pajson.read_json(pa.BufferReader(data), parse_options=opts)
        # a field an older document lacks (size, rejected, defaulted) counts as 0
        zero = int64s([0])[0]  # not pa.scalar(0): it would ask whether 0 is pandas'
        cols = [table.column(n) if i < _TEXT else pc.fill_null(table.column(n), zero)
                for i, n in enumerate(COLUMNS)]
        return cls(pa.Table.from_arrays(cols, schema=SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def names(self) -> list[str]:
        return self.table.column("name").to_pylist()

    @property
    def rows(self) -> int:
        return int(pc.sum(self.table.column("rows")).as_py() or 0)

    def get(self, name: str) -> Commit | None:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        i = self._index.get(name)
        return None if i is None else self._commit(self.table.slice(i, 1).to_pylist()[0])

    def batches(self, size: int) -> Iterator[list[Commit]]:
        """The versions as models, `size` at a time."""
        for i in range(0, len(self), max(1, size)):
            yield [self._commit(r) for r in self.table.slice(i, size).to_pylist()]

    def files(self) -> list[DataFile]:
        """The versions with rows (a version without rows has no file)."""
        t = self.table.filter(pc.not_equal(self.table.column("path"), string_scalar("")))
        return [DataFile(*r) for r in zip(t.column("path").to_pylist(),
                                          t.column("size").to_pylist(),
                                          t.column("rows").to_pylist(), strict=True)]

    @staticmethod
    def _commit(row: dict[str, object]) -> Commit:
        return Commit.model_validate(row)
