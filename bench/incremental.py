"""Target 5: incremental scale — 100,000 listed fragments, 100 changed.

State and the Delta table are seeded as if a first refresh had committed every
fragment: state holds 100,000 commits and the table one version with 100,000 add
actions (and a checkpoint, as delta-rs writes one every 100 versions). The files are
never read, so none is written. The measured refresh then lists with a new generation
in which 100 fingerprints changed, and commits a version adding 100 files and removing
the 100 they replace. Figures:
- list + diff + dispatch: refresh start -> first on_progress("read", 0, 100), minus the
  listing session's cold start (reported separately). Dispatch itself (handing the
  100 fragments to the pool) happens right after and is in the read phase; the read
  phase is reported for information.
- commit: the finalize step (recover, plan the version, one Delta commit, state applied).
  The target (< 5x the listing) applies to list + diff + dispatch + commit: the
  refresh's own work, without reading the 100 changed fragments.
- whole refresh: list + diff + read 100 + commit, the listing session's cold start
  excluded, for information.
- baseline: the connector's own list_objects, consumed in-process (best of repeats).
"""

from __future__ import annotations

import resource
import time

import worker.refresh
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
from worker.spec import load_connector
from worker.state.sqlite import SqliteState
from worker.table.delta import DeltaDataset
from worker.table.schema import declared, read_key, schema_tag


def seed(out, spec, objs: list[dict]) -> SqliteState:
    """State and a one-version table holding every listed fragment."""
    from deltalake import DeltaTable
    from deltalake.schema import Schema as DeltaSchema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    state = SqliteState(out / "state.sqlite")
    tag = schema_tag(spec)
    commits = [Commit(name=o["name"], fingerprint=read_key(o["fingerprint"], tag),
                      path=f"data/seed-{i:06d}.parquet", rows=1, size=1000)
               for i, o in enumerate(objs)]
    for c in commits:
        state.commit(c)
    uri = str(out / spec.tenant / spec.name)
    create_table_with_add_actions(
        uri, DeltaSchema.from_arrow(declared(spec)),
        [AddAction(c.path, c.size, {}, 0, True, '{"numRecords": 1}') for c in commits])
    DeltaTable(uri).create_checkpoint()
    return state


class _TimedFinalize:
    """worker.refresh.finalize, timed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._inner = worker.refresh.finalize

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        t0 = time.perf_counter()
        try:
            return self._inner(*args, **kwargs)
        finally:
            self.seconds = time.perf_counter() - t0


def _cpu() -> float:
    """User + system CPU seconds of this process and the children it reaped: the process
    sandbox's runtimes. Not containers, and not the user processes (killed with their
    session's process group, so nobody here reaps them)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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
    spec = load_connector(conn.path).spec
    timer = _TimedFinalize()
    worker.refresh.finalize = timer
    try:
        for kind in runnable(report, sandboxes):
            box = warm_box(kind, conn)
            best = whole = commit = cpu = float("inf")
            read_phase = float("inf")
            opens: list[float] = []
            for _ in range(repeats):
                out = work.fresh_output(f"listing-{kind}")
                t0 = time.perf_counter()
                seed(out, spec, objs)
                seeding = time.perf_counter() - t0
                c0 = _cpu()
                t = timed_refresh(conn, box, out, 2, out / "state.sqlite", credentials="2")
                cpu = min(cpu, _cpu() - c0)
                assert t.summary.listed == fragments and t.summary.read == 100, t.summary
                version = DeltaDataset(str(out / spec.tenant / spec.name)).history(1)[0]
                assert version.version == 1 and version.counts["files_removed"] == 100
                best = min(best, t.until_read - t.opens[0])
                whole = min(whole, t.total - t.opens[0])
                commit = min(commit, timer.seconds)
                read_phase = min(read_phase, t.read_phase)
                opens.append(t.opens[0])
            report.add(Result(f"{kind}: second refresh list + diff + dispatch", best, "s",
                              base, "connector's listing", "< 5x", best / base < 5,
                              note=f"listing session cold start {min(opens):.2f} s excluded; "
                                   f"seeding state and table: {seeding:.1f} s"))
            report.add(Result(f"{kind}: table commit (100 added, 100 removed, of "
                              f"{fragments:,})", commit, "s"))
            report.add(Result(f"{kind}: list + diff + dispatch + table commit", best + commit,
                              "s", base, "connector's listing", "< 5x",
                              (best + commit) / base < 5))
            report.add(Result(f"{kind}: whole second refresh incl. reading the 100", whole,
                              "s", base, "connector's listing",
                              note=f"read phase incl. commit {read_phase:.2f} s"
                                   + (f"; CPU {cpu:.2f} s (host + runtime processes, "
                                      "cold starts included)" if kind == "process" else "")))
    finally:
        worker.refresh.finalize = timer._inner
