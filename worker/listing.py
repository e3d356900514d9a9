"""A connector's listing on the host: one Arrow table, fragments built on demand.

A refresh of 100,000 listed fragments of which 100 changed should cost little more than
the user's own listing; a validated model per fragment would cost several times that.
So the listing stays columnar: uniqueness is checked and the diff is computed on the
columns (worker.refresh.diff), and `Fragment` models are made only for what is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from worker.arrays import int64s
from worker.models import FailureKind, Fragment, FragmentFailure
from worker.protocol import LISTING_SCHEMA, STANDARD_KEYS, listing_batch
from worker.settings import settings


class Listing:
    def __init__(self, table: pa.Table) -> None:
        if not table.schema.equals(LISTING_SCHEMA):
            raise FragmentFailure(f"listing has the wrong shape: {table.schema}")
        for col in ("name", "fingerprint"):
            if table.column(col).null_count:
                raise FragmentFailure(f"list_objects yielded a fragment without a {col}")
        names = table.column("name")
        if len(names) and pc.count_distinct(names).as_py() != len(names):
            counts = pc.value_counts(names)
            dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
            raise FragmentFailure(f"list_objects yielded the name {dup.as_py()!r} twice; "
                                  "fragment names must be unique")
        _check_sizes(table)
        _check_extras(table)
        self.table = table

    @classmethod
    def from_batches(cls, batches: list[pa.RecordBatch]) -> Listing:
        return cls(pa.Table.from_batches(batches, schema=LISTING_SCHEMA))

    @classmethod
    def of(cls, fragments: Iterable[Fragment]) -> Listing:
        objs = [f.metadata() for f in fragments]
        return cls.from_batches([listing_batch(objs)] if objs else [])

    @classmethod
    def _checked(cls, table: pa.Table) -> Listing:
        """Rows of a listing already checked (a selection keeps its properties)."""
        out = cls.__new__(cls)
        out.table = table
        return out

    def __len__(self) -> int:
        return self.table.num_rows

    def select(self, indices: pa.Array) -> Listing:
        """The fragments at these row positions, still as columns."""
        return Listing._checked(self.table.take(indices))

    @property
    def names(self) -> list[str]:
        return self.table.column("name").to_pylist()

    def chunks(self, size: int) -> Iterator[list[Fragment]]:
        """The fragments as models, `size` at a time: a refresh of 100,000 holds one
        chunk of models, not 100,000."""
        for i in range(0, len(self), max(1, size)):
            yield self.take(range(i, min(i + size, len(self))))

    def __iter__(self) -> Iterator[Fragment]:
        return iter(self.take(range(len(self))))

    def take(self, indices: Iterable[int]) -> list[Fragment]:
        """The fragments at these row positions, as the user listed them."""
        idx = int64s(indices)
        rows = self.table.take(idx).to_pylist()
        out = []
        for r in rows:
            extra = r.pop("extra")
            if extra:
                r.update({k: v for k, v in json.loads(extra).items()
                          if k not in STANDARD_KEYS})
            out.append(Fragment.model_validate(r))
        return out


def _check_sizes(table: pa.Table) -> None:
    """Names and fingerprints within their caps: the state keeps each several times over
    (in queue mode in Redis, which every tenant shares), so one fragment of megabytes
    would cost them all."""
    for col, setting in (("name", "max_fragment_name_bytes"),
                         ("fingerprint", "max_fingerprint_bytes")):
        values = table.column(col)
        limit = getattr(settings(), setting)
        if not len(values) or pc.max(pc.binary_length(values)).as_py() <= limit:
            continue
        i = pc.index(pc.greater(pc.binary_length(values), limit), True).as_py()
        size = len(values[i].as_py().encode())
        where = f"the limit is {limit:,} (CONNECTOR_{setting.upper()})"
        if col == "name":
            shown = values[i].as_py()[:40]
            raise FragmentFailure(f"list_objects yielded a fragment name of {size:,} bytes "
                                  f"({shown!r}...); {where}", FailureKind.LIMIT)
        name = table.column("name")[i].as_py()
        raise FragmentFailure(f"list_objects yielded fragment {name!r} with a fingerprint "
                              f"of {size:,} bytes; {where}", FailureKind.LIMIT)


def _check_extras(table: pa.Table) -> None:
    """Extra metadata must be a JSON object per fragment: it crossed from the sandbox as
    text, and `take` would otherwise fail later, far from the listing that sent it."""
    extras = table.column("extra")
    if extras.null_count == len(extras):
        return
    present = pc.indices_nonzero(pc.is_valid(extras))
    for i, text in zip(present.to_pylist(), extras.take(present).to_pylist(), strict=True):
        try:
            ok = isinstance(json.loads(text), dict)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            name = table.column("name")[i].as_py()
            raise FragmentFailure(f"list_objects item {name!r}: its extra metadata is not "
                                  "a JSON object")
