"""Targets 1 and 2: rows/s from read_bytes to committed Parquet, against in-process limits.

Figures per sandbox:
- read phase: from the refresh's first `on_progress("read", ...)` (listing and diff done,
  the listing session is warm) to refresh() returning: every fragment read, written,
  renamed and committed. This is the figure the targets are judged on.
- end to end: the whole refresh() call, session cold start included (reported too).
"""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench import workload
from bench.common import (
    Report,
    Result,
    TimedSandbox,
    Workdir,
    make_sandbox,
    runnable,
    section,
    timed_refresh,
)
from worker.spec import Connector


def csv_connector(work: Workdir, name: str, fragments: int, rows: int, custom: bool = False):
    files = {"data.csv": workload.csv_bytes(rows), "fragments.txt": str(fragments).encode()}
    if custom:
        return work.connector(name, workload.CUSTOM_CODE, workload.custom_spec(name), files)
    return work.connector(name, workload.CSV_CODE, workload.csv_spec(name), files)


def baseline_limit(work: Workdir, fragments: int, rows: int, repeats: int) -> float:
    """The in-process limit: pyarrow read_csv + write_table on the same bytes (rows/s)."""
    data = workload.csv_bytes(rows)
    out = work.fresh_output("baseline")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(fragments):
            table = pacsv.read_csv(pa.py_buffer(data))
            pq.write_table(table, str(out / f"part-{i:03d}.parquet"))
        best = min(best, time.perf_counter() - t0)
    return fragments * rows / best


def sandbox_throughput(work: Workdir, kind: str, connector, fragments: int, rows: int,
                       repeats: int, concurrency: int) -> tuple[float, float, float]:
    """(read-phase rows/s, end-to-end rows/s, first session open s) — best of `repeats`."""
    box = TimedSandbox(make_sandbox(kind))
    if kind == "docker":
        box.inner.image_for(connector)  # type: ignore[attr-defined] - build outside timing
    best_read = best_total = float("inf")
    opens: list[float] = []
    for _ in range(repeats):
        out = work.fresh_output(f"{kind}-{connector.spec.name}")
        t = timed_refresh(connector, box, out, concurrency)
        assert t.summary.rows == fragments * rows, t.summary
        best_read = min(best_read, t.read_phase)
        best_total = min(best_total, t.total)
        opens.extend(t.opens)
    total_rows = fragments * rows
    return total_rows / best_read, total_rows / best_total, min(opens) if opens else 0.0


def run(report: Report, work: Workdir, *, fragments: int, rows: int, repeats: int,
        sandboxes: list[str], concurrency: int, queue_workers: int = 2) -> None:
    section(f"throughput: {fragments} fragments x {rows:,} rows of CSV "
            f"({fragments * len(workload.csv_bytes(rows)) / 1e6:.0f} MB)")
    conn = csv_connector(work, "bench_csv", fragments, rows)
    ctx_s, read_s = workload.producer_cost(conn.path, fragments)
    report.note(f"producer cost (in-process): context() {ctx_s * 1e3:.1f} ms once per "
                f"session; read_bytes {read_s * 1e3:.2f} ms for all {fragments} fragments")
    limit = baseline_limit(work, fragments, rows, repeats)
    report.add(Result("in-process limit: read_csv + write_table", limit, "rows/s"))
    targets = {"process": 0.7, "docker": 0.6}
    for kind in runnable(report, sandboxes):
        read_rps, total_rps, cold = sandbox_throughput(work, kind, conn, fragments, rows,
                                                       repeats, concurrency)
        t = targets[kind]
        report.add(Result(f"{kind} sandbox, read phase (c={concurrency})", read_rps, "rows/s",
                          limit, "in-process limit", f">= {t}x",
                          read_rps / limit >= t))
        report.add(Result(f"{kind} sandbox, end to end incl. cold start", total_rps, "rows/s",
                          limit, "in-process limit", note=f"session open {cold:.2f} s"))
    run_queue(report, work, conn, limit, fragments=fragments, rows=rows, repeats=repeats,
              sandboxes=sandboxes, workers=queue_workers)


def run_queue(report: Report, work: Workdir, conn: Connector, limit: float, *,
              fragments: int, rows: int, repeats: int, sandboxes: list[str],
              workers: int) -> None:
    """Target 1 in queue mode: enqueue -> refresh closed, `workers` worker processes."""
    from bench import queued

    qb = queued.open_bench(report, work, workers)
    if qb is None:
        return
    with qb:
        report.note(f"queue mode: Redis {qb.url}, key prefixes {qb.prefix} / "
                    f"{qb.rq_prefix}; workers warmed by one untimed refresh each")
        for kind in queued.queue_kinds(sandboxes):
            m = queued.measure(qb, conn, kind, workers, repeats, fragments,
                               fragments * rows)
            rps = fragments * rows / m["best"]
            runs = ", ".join(f"{t:.2f}" for t in m["times"])
            target = 0.5 if kind == "docker" else None
            report.add(Result(f"queue mode, {kind} sandbox, {workers} workers", rps, "rows/s",
                              limit, "in-process limit", f">= {target}x" if target else "",
                              rps / limit >= target if target else None,
                              note=f"enqueue -> closed; runs {runs} s; "
                                   f"warm-up {m['warmup']:.1f} s"))
        for left in qb.leftovers:
            report.note(f"queue mode: LEFTOVER {left}")

# --------------------------------------------------------------------------- custom


def baseline_custom(fragments: int, rows: int, repeats: int) -> float:
    """A plain in-process loop building the same dicts + Table.from_pylist (rows/s)."""
    data = workload.csv_bytes(rows)
    cols = workload.COLUMNS
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(fragments):
            reader = io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)), encoding="utf-8")
            next(reader)
            dicts = [dict(zip(cols, line.rstrip("\n").split(","), strict=False))
                     for line in reader]
            pa.Table.from_pylist(dicts)
        best = min(best, time.perf_counter() - t0)
    return fragments * rows / best


def run_custom(report: Report, work: Workdir, *, fragments: int, rows: int, repeats: int,
               concurrency: int) -> None:
    section(f"custom parser_function: {fragments} fragments x {rows:,} rows, one onNext per row")
    conn = csv_connector(work, "bench_custom", fragments, rows, custom=True)
    base = baseline_custom(fragments, rows, repeats)
    report.add(Result("in-process loop + Table.from_pylist", base, "rows/s"))
    read_rps, total_rps, _ = sandbox_throughput(work, "process", conn, fragments, rows,
                                                repeats, concurrency)
    report.add(Result(f"custom parser, process sandbox, read phase (c={concurrency})",
                      read_rps, "rows/s", base, "in-process loop", ">= 0.8x",
                      read_rps / base >= 0.8))
    report.add(Result("custom parser, process sandbox, end to end", total_rps, "rows/s",
                      base, "in-process loop"))

