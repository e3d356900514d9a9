"""Target 5: incremental scale — 100,000 listed fragments, 100 changed.

State is seeded as if a first refresh had committed every fragment (empty files, so no
Parquet is needed); the measured refresh then lists with a new generation in which
100 fingerprints changed. Figures:
- list + diff + dispatch: refresh start -> first on_progress("read", 0, 100), minus the
  listing session's cold start (reported separately). Dispatch itself (handing the
  100 fragments to the pool) happens right after and is in the read phase; the read
  phase is reported for information.
- baseline: the connector's own list_objects, consumed in-process (best of repeats).
"""

from __future__ import annotations

import time

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
from worker.state.sqlite import SqliteState


def connector_listing(folder, repeats: int) -> tuple[float, list[dict]]:
    mod = workload.load_module(folder)
    best = float("inf")
    objs: list[dict] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ctx = mod.context("1")
        objs = list(mod.list_objects(ctx, {}))
        best = min(best, time.perf_counter() - t0)
    return best, objs


def run(report: Report, work: Workdir, *, fragments: int, repeats: int,
        sandboxes: list[str]) -> None:
    section(f"incremental: {fragments:,} listed fragments, 100 changed")
    conn = work.connector("bench_listing", workload.LISTING_CODE, workload.LISTING_SPEC,
                          {"fragments.txt": str(fragments).encode()})
    base, objs = connector_listing(conn.path, repeats)
    report.add(Result("connector's own listing, in-process", base, "s"))
    for kind in runnable(report, sandboxes):
        box = warm_box(kind, conn)
        best = float("inf")
        read_phase = float("inf")
        opens: list[float] = []
        for _ in range(repeats):
            out = work.fresh_output(f"listing-{kind}")
            state = SqliteState(out / "state.sqlite")
            t0 = time.perf_counter()
            for o in objs:
                state.commit(Commit(name=o["name"], fingerprint=o["fingerprint"], path="",
                                    rows=0))
            seed = time.perf_counter() - t0
            t = timed_refresh(conn, box, out, 2, out / "state.sqlite", credentials="2")
            assert t.summary.listed == fragments and t.summary.read == 100, t.summary
            best = min(best, t.until_read - t.opens[0])
            read_phase = min(read_phase, t.read_phase)
            opens.append(t.opens[0])
        report.add(Result(f"{kind}: second refresh list + diff + dispatch", best, "s", base,
                          "connector's listing", "< 5x", best / base < 5,
                          note=f"listing session cold start {min(opens):.2f} s excluded; "
                               f"reading the 100 changed: {read_phase:.2f} s; "
                               f"seeding state: {seed:.1f} s"))
