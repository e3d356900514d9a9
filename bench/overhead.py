"""Target 3: per-fragment overhead — many one-row fragments through warm sessions.

The figure is fragments/s over the refresh's read phase (sessions warm: the listing
session is reused; with concurrency > 1 the other sessions start inside the phase, as
they would in production). The cold container start is reported from the same run.
The in-process floor (a one-row Parquet file written, renamed and committed per
fragment, no sandbox) is reported for scale.
"""

from __future__ import annotations

import statistics
import time

import pyarrow as pa

from bench import workload
from bench.common import (
    Report,
    Result,
    Workdir,
    runnable,
    section,
    timed_refresh,
    warm_box,
)
from worker.models import Commit
from worker.sink import Output
from worker.spec import Connector
from worker.state.sqlite import SqliteState


def floor(work: Workdir, n: int) -> float:
    """In-process: write + rename + stage a one-row Parquet file per fragment (frag/s)."""
    out = work.fresh_output("floor")
    output, state = Output(str(out)), SqliteState(out / "state.sqlite")
    t0 = time.perf_counter()
    for i in range(n):
        rel = output.new_fragment_file(f"tiny-{i:05d}")
        batch = pa.record_batch({"id": [i], "name": [f"tiny-{i:05d}"]})
        rows = output.write(f"{output.dataset_dir('default', 'floor')}/{rel}", [batch])
        state.stage("bench", Commit(name=f"tiny-{i:05d}", fingerprint="v1", path=rel,
                                    rows=rows))
    return n / (time.perf_counter() - t0)


def run(report: Report, work: Workdir, *, fragments: int, repeats: int, concurrency: int,
        sandboxes: list[str], queue_workers: int = 2) -> None:
    section(f"per-fragment overhead: {fragments:,} one-row fragments, warm sessions")
    conn = work.connector("bench_tiny", workload.TINY_CODE, workload.TINY_SPEC,
                          {"fragments.txt": str(fragments).encode()})
    base = floor(work, fragments)
    report.add(Result("in-process floor: write + rename + commit", base, "fragments/s"))
    for kind in runnable(report, sandboxes):
        box = warm_box(kind, conn)
        best = float("inf")
        opens: list[float] = []
        for _ in range(repeats):
            out = work.fresh_output(f"tiny-{kind}")
            t = timed_refresh(conn, box, out, concurrency)
            assert t.summary.read == fragments and t.summary.rows == fragments, t.summary
            best = min(best, t.read_phase)
            opens.extend(t.opens)
        fps = fragments / best
        target = ">= 150/s" if kind == "docker" else ""
        report.add(Result(f"{kind}: one-row fragments, warm (c={concurrency})", fps,
                          "fragments/s", base, "in-process floor", target,
                          fps >= 150 if kind == "docker" else None))
        if opens:
            report.add(Result(f"{kind}: cold session start (open + context())",
                              statistics.median(opens), "s",
                              note=f"min {min(opens):.2f} s, max {max(opens):.2f} s, "
                                   f"n={len(opens)}"))
    run_queue(report, work, conn, base, fragments=fragments, repeats=repeats,
              sandboxes=sandboxes, workers=queue_workers)


def run_queue(report: Report, work: Workdir, conn: Connector, base: float, *,
              fragments: int, repeats: int, sandboxes: list[str], workers: int) -> None:
    """Target 3 in queue mode: enqueue -> refresh closed, warm sessions in each worker."""
    from bench import queued

    qb = queued.open_bench(report, work, workers)
    if qb is None:
        return
    with qb:
        for kind in queued.queue_kinds(sandboxes):
            m = queued.measure(qb, conn, kind, workers, repeats, fragments, fragments)
            fps = fragments / m["best"]
            runs = ", ".join(f"{t:.2f}" for t in m["times"])
            docker = kind == "docker"
            report.add(Result(f"queue mode, {kind}: one-row fragments, {workers} workers, warm",
                              fps, "fragments/s", base, "in-process floor",
                              ">= 80/s" if docker else "", fps >= 80 if docker else None,
                              note=f"enqueue -> closed; runs {runs} s; "
                                   f"warm-up {m['warmup']:.1f} s"))
        for left in qb.leftovers:
            report.note(f"queue mode: LEFTOVER {left}")
