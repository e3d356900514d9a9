"""The pipe hop between the user process and the runtime process, alone.

bytes: read_bytes() output iterated in-process (the old single-process shape) against
       the same chunks crossing from the shim to the runtime (worker.runtime.userproc),
       for 1 MiB chunks and for 100-byte chunks (a line per chunk: the shim coalesces).
rows:  a custom parser_function's rows, in-process loop + Table.from_pylist against the
       same rows crossing as batches of columns (worker.runtime.shim.columns, marshal)
       and built into Arrow per column on the runtime side; and the candidate encodings
       for one 65,536-row batch, each timed from the shim's row dicts to an Arrow batch
       in CPU seconds (the two sides run on two cores; CPU is what they cost).
"""

from __future__ import annotations

import json
import marshal
import pickle
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow as pa

from bench.common import Report, best_of, section
from worker.runtime.formats.rows import RowColumns, columns_to_batch, rows_to_batch
from worker.runtime.shim import columns
from worker.runtime.userproc import UserProcess

BYTES_CODE = '''
def list_objects(context, metadata):
    return []

def read_bytes(context, metadata):
    if "rows" in metadata:
        yield str(metadata["rows"])
        return
    size, total = metadata["chunk"], metadata["total"]
    block = b"x" * size
    for _ in range(total // size):
        yield block

def parser_function(reader, onNext):
    n = int(reader.read())
    for i in range(n):
        onNext({"id": i, "name": "user", "score": i * 0.5, "active": True, "tag": None})
'''


def _user_python() -> str:
    # The shim needs only the standard library: the base interpreter is a user env
    # with no packages, which is all this measurement needs.
    return getattr(sys, "_base_executable", sys.executable)


def _in_process_bytes(chunk: int, total: int) -> float:
    ns: dict[str, object] = {}
    exec(BYTES_CODE, ns)  # noqa: S102 - the bench's own connector code
    t0 = time.perf_counter()
    n = 0
    for c in ns["read_bytes"]({}, {"chunk": chunk, "total": total}):  # type: ignore[operator]
        n += len(c)
    return time.perf_counter() - t0


def _through_pipe_bytes(user: UserProcess, chunk: int, total: int) -> float:
    t0 = time.perf_counter()
    n = 0
    for c in user.read_bytes({"name": "x", "chunk": chunk, "total": total}):
        n += len(c)
    assert n == total - total % chunk, n
    return time.perf_counter() - t0


def _rows_in_process(n: int) -> float:
    ns: dict[str, object] = {}
    exec(BYTES_CODE, ns)  # noqa: S102
    t0 = time.perf_counter()
    rows: list[dict[str, object]] = []

    def on_next(row: dict[str, object]) -> None:
        rows.append(row)
        if len(rows) >= 65536:
            pa.Table.from_pylist(rows)
            rows.clear()

    ns["parser_function"](_Text(str(n)), on_next)  # type: ignore[operator]
    # (in the sandbox the reader is a text stream over read_bytes: the same one read)
    if rows:
        pa.Table.from_pylist(rows)
    return time.perf_counter() - t0


class _Text:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text


def _rows_through_pipe(user: UserProcess, n: int) -> float:
    from worker.spec import ParserSpec

    t0 = time.perf_counter()
    got = 0
    for batch in user.read_rows({"name": "x", "rows": n}, ParserSpec(format="custom")):
        columns_to_batch(batch)
        got += batch.rows
    assert got == n, got
    return time.perf_counter() - t0


def _encodings(report: Report) -> None:
    def make() -> list[dict[str, object]]:
        return [{"id": i, "name": f"user{i}", "score": i * 0.5, "active": i % 2 == 0,
                 "tag": None} for i in range(65536)]

    def columnar_dump(rows: list[dict[str, object]]) -> bytes:
        batch = columns(rows)
        rows.clear()  # as the shim does: the columns alone hold the values
        return marshal.dumps(batch)

    def columnar_load(body: bytes) -> pa.RecordBatch:
        return columns_to_batch(RowColumns(*marshal.loads(body)))

    codecs = {
        "row dicts, marshal -> from_pylist": (
            marshal.dumps, lambda b: rows_to_batch(marshal.loads(b))),
        "row dicts, pickle 5 -> from_pylist": (
            lambda r: pickle.dumps(r, 5), lambda b: rows_to_batch(pickle.loads(b))),
        "row dicts, JSON lines -> from_pylist": (
            lambda r: "\n".join(json.dumps(x) for x in r).encode(),
            lambda b: rows_to_batch([json.loads(x) for x in b.splitlines()])),
        "columns (shim.columns), marshal -> pa.array per column": (
            columnar_dump, columnar_load),
    }
    for name, (dump, load) in codecs.items():
        def once(dump=dump, load=load) -> tuple[float, float, int]:  # noqa: ANN001
            rows = make()
            c0 = time.process_time()
            body = dump(rows)
            del rows
            c1 = time.process_time()
            load(body)
            return c1 - c0, time.process_time() - c1, len(body)

        runs = [once() for _ in range(5)]
        d, lo, size = min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]
        report.add(_result(f"rows encoding {name}: shim side + runtime side, 65,536 rows",
                           (d + lo) * 1000, "ms CPU",
                           note=f"shim {d * 1000:.0f} ms, runtime {lo * 1000:.0f} ms, "
                                f"{size / 2**20:.1f} MiB"))


def _result(name: str, figure: float, unit: str, baseline: float | None = None,
            baseline_name: str = "", note: str = "") -> object:
    from bench.common import Result

    return Result(name, figure, unit, baseline, baseline_name, note=note)


def run(report: Report, total_mib: int = 256, rows: int = 500_000, repeats: int = 3) -> None:
    section("pipe hop: user process -> runtime process")
    with tempfile.TemporaryDirectory(prefix="pipehop-") as td:
        folder = Path(td)
        (folder / "connector.py").write_text(textwrap.dedent(BYTES_CODE))
        user = UserProcess(_user_python())
        try:
            user.open(str(folder), None)
            total = total_mib << 20
            for chunk, label in ((1 << 20, "1 MiB chunks"), (100, "100-byte chunks")):
                size = total if chunk >= 1 << 20 else total // 16
                base = best_of(repeats, lambda c=chunk, s=size: _in_process_bytes(c, s))
                hop = best_of(repeats, lambda c=chunk, s=size: _through_pipe_bytes(user, c, s))
                mib = size / 2**20
                report.add(_result(f"bytes through the pipe, {label}", mib / hop, "MiB/s",
                                   mib / base, "read_bytes iterated in-process"))
            base = best_of(repeats, lambda: _rows_in_process(rows))
            hop = best_of(repeats, lambda: _rows_through_pipe(user, rows))
            report.add(_result("custom rows through the pipe (columns) + pa.array per column",
                               rows / hop, "rows/s", rows / base,
                               "in-process loop + from_pylist"))
        finally:
            user.close()
    _encodings(report)


if __name__ == "__main__":
    r = Report()
    run(r)
    print()
    print(r.table())
