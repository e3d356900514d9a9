"""End-to-end refresh throughput by the two-size slope: what a user waits for.

`connector refresh` is run as a user runs it, a subprocess of the installed CLI, on a
fresh output dir, at two sizes of the same workload (default 8 x 100,000 and
8 x 400,000 rows of the 8-column CSV with its declared schema). Throughput is

    rows/s = (rows_big - rows_small) / (seconds_big - seconds_small)

so interpreter start, imports, sandbox start, listing and exit cancel, and what is left
is the per-row cost including every per-fragment cost. After one untimed small run,
each size is timed `repeats` times, the two sizes interleaved (small, big, small, big,
...) so a burst of load on the shared box hits both; the minimum of each size is used.

The limit is the same slope over the same files in this process: `pyarrow.csv.read_csv`
(its default, multi-threaded) + `pq.write_table` per fragment. The custom parser is
compared with an in-process `for line in reader` + `Table.from_pylist` loop, same slope.

Connectors read their fragment files from their own folder in 1 MiB chunks (the files
are in the page cache after the first run; the limit reads the same files). The
project's workload is one CSV shared by every fragment; `--workload peers` uses
../shared/peers/workload.py's generator instead (distinct bytes per fragment), which is
what `make bench-peers` runs so that the peers and the project read the same bytes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench import workload
from bench.common import Report, Result, UserProcessCpu, Workdir, docker_available, section
from worker.spec import Connector

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_BIN = Path(sys.executable).parent / "connector"

E2E_CODE = """
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = 1 << 20


def list_objects(context, metadata):
    for i in range(int((HERE / "fragments.txt").read_text())):
        yield {"name": f"part-{i:03d}.csv", "fingerprint": "v1"}


def read_bytes(context, metadata):
    path = HERE / metadata["name"]
    if not path.exists():  # the project's workload: one file for every fragment
        path = HERE / "data.csv"
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
"""

CUSTOM_PARSER = f"""

COLS = {workload.COLUMNS!r}


def parser_function(reader, onNext):
    next(reader)  # header
    cols = COLS
    for line in reader:
        onNext(dict(zip(cols, line.rstrip("\\n").split(","))))
"""


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """Fragment files for (fragments, rows): one shared file, or one file per fragment."""

    name: str
    peers_dir: Path | None = None

    def files(self, fragments: int, rows: int) -> dict[str, bytes]:
        if self.peers_dir is None:
            return {"data.csv": workload.csv_bytes(rows)}
        gen = _peer_workload(self.peers_dir)
        return {f"part-{i:03d}.csv": gen.make_fragment(i, rows) for i in range(fragments)}


def _peer_workload(peers_dir: Path) -> ModuleType:
    path = peers_dir / "workload.py"
    if not path.is_file():
        raise SystemExit(f"bench: no peer workload at {path} (set PEERS_DIR)")
    spec = importlib.util.spec_from_file_location("peer_workload", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fragment_paths(conn: Connector, fragments: int) -> list[Path]:
    """The file each listed fragment reads (as the connector's read_bytes resolves it)."""
    out = []
    for i in range(fragments):
        p = conn.path / f"part-{i:03d}.csv"
        out.append(p if p.exists() else conn.path / "data.csv")
    return out


def e2e_connector(work: Workdir, wl: Workload, name: str, fragments: int, rows: int,
                  custom: bool = False) -> Connector:
    files = {**wl.files(fragments, rows), "fragments.txt": str(fragments).encode()}
    if custom:
        return work.connector(name, E2E_CODE + CUSTOM_PARSER, workload.custom_spec(name),
                              files)
    return work.connector(name, E2E_CODE, workload.csv_spec(name), files)


# --------------------------------------------------------------------------- timing


@dataclass
class Slope:
    """Best seconds at each size and the slope between them."""

    small_rows: int
    big_rows: int
    small_s: list[float]
    big_s: list[float]
    small_cpu: list[float] = field(default_factory=list)
    big_cpu: list[float] = field(default_factory=list)
    base: Slope | None = None  # the baseline, measured interleaved with this one

    @property
    def cpu_us_per_row(self) -> float | None:
        """CPU seconds (user + sys, every process and thread that was measured) per
        extra row, in µs: far less sensitive to a busy box than wall time, and on two
        cores the wall slope cannot beat 2 / this."""
        if not self.small_cpu or not self.big_cpu:
            return None
        extra = min(self.big_cpu) - min(self.small_cpu)
        return extra / (self.big_rows - self.small_rows) * 1e6

    @property
    def rps(self) -> float:
        dt = min(self.big_s) - min(self.small_s)
        return (self.big_rows - self.small_rows) / dt if dt > 0 else float("nan")

    @property
    def fixed_s(self) -> float:
        """The intercept: seconds a zero-row refresh would take (start-up, listing, exit)."""
        return min(self.small_s) - self.small_rows / self.rps

    def note(self) -> str:
        s = "/".join(f"{t:.2f}" for t in self.small_s)
        b = "/".join(f"{t:.2f}" for t in self.big_s)
        cpu = self.cpu_us_per_row
        return (f"small {s} s, big {b} s, intercept {self.fixed_s:.2f} s"
                + (f", CPU {cpu:.2f} µs/row" if cpu is not None else ""))


# A run returns its wall seconds, or (wall seconds, CPU seconds) where CPU is measurable.
Timing = float | tuple[float, float]


def slope(small_rows: int, big_rows: int, repeats: int,
          run_small: Callable[[], Timing], run_big: Callable[[], Timing],
          paired: tuple[Callable[[], Timing], Callable[[], Timing]] | None = None) -> Slope:
    """The slope of `run_*`; with `paired` (the baseline's small and big runs), the
    baseline is measured interleaved with it (baseline small, small, baseline big, big,
    ...) into `.base`, so a burst of load on a shared box hits both alike."""
    s = Slope(small_rows, big_rows, [], [])
    base = Slope(small_rows, big_rows, [], []) if paired else None
    run_small()  # untimed: page cache, thread pools, images and sessions warm
    steps: list[tuple[Callable[[], Timing], Slope, bool]] = []
    for fn, big in ((run_small, False), (run_big, True)):
        if paired and base is not None:
            steps.append((paired[big], base, big))
        steps.append((fn, s, big))
    for _ in range(max(1, repeats)):
        for fn, into, big in steps:
            t = fn()
            walls, cpus = (into.big_s, into.big_cpu) if big else (into.small_s, into.small_cpu)
            if isinstance(t, tuple):
                walls.append(t[0])
                cpus.append(t[1])
            else:
                walls.append(t)
    s.base = base
    return s


T = TypeVar("T")


def retried(fn: Callable[[], T], attempts: int = 3) -> T:
    """`fn()`, run again (after 10 s) if it fails, up to `attempts` in all: on a shared
    box someone may restart the Docker engine mid-run. `fn` must set up its own fresh
    state (output dir, committed state) each time."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except RuntimeError as e:
            if attempt == attempts:
                raise
            print(f"  (retrying after a failed run: {str(e).strip().splitlines()[-1][:200]})",
                  flush=True)
            time.sleep(10)
    raise AssertionError("unreachable")


def cli(args: list[str], env: dict[str, str] | None = None,
        expect_rows: int | None = None) -> tuple[float, float]:
    """(wall seconds from spawn to exit, CPU seconds of the CLI, every process it waited
    for and the user processes under it: the process sandbox's runtimes and shims, not
    containers or queue workers) of one `connector ...` subprocess; checks its JSON."""
    return _cli_once(args, env, expect_rows)


def _cli_once(args: list[str], env: dict[str, str] | None,
              expect_rows: int | None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with subprocess.Popen([str(CONNECTOR_BIN), *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        users = UserProcessCpu(p.pid)
        out, err = p.communicate()
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu += users.stop()
    if p.returncode != 0:
        raise RuntimeError(f"bench: connector {' '.join(args)} exited {p.returncode}:\n"
                           f"{out[-2000:]}\n{err[-3000:]}")
    if expect_rows is not None:
        counts = json.loads(out.strip().splitlines()[-1])
        if counts.get("rows") != expect_rows or counts.get("failed"):
            raise RuntimeError(f"bench: connector {' '.join(args)} gave {counts}, "
                               f"expected {expect_rows} rows")
    return secs, cpu


def local_refresh(work: Workdir, conn: Connector, sandbox: str, rows: int,
                  concurrency: int | None) -> Callable[[], Timing]:
    def once() -> tuple[float, float]:
        out = work.fresh_output(f"e2e-{sandbox}-{conn.spec.name}")
        args = ["refresh", str(conn.path), "--output", str(out), "--sandbox", sandbox,
                "--json"]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        return cli(args, expect_rows=rows)

    def run() -> Timing:
        wall, cpu = retried(once)
        # CPU is only whole for the process sandbox (containers are not our children)
        return (wall, cpu) if sandbox == "process" else wall
    return run


def limit_run(work: Workdir, paths: list[Path]) -> Callable[[], Timing]:
    """In-process read_csv (default threads) + write_table per fragment, same files."""
    def run() -> Timing:
        out = work.fresh_output("e2e-limit")
        c0, t0 = time.process_time(), time.perf_counter()
        for i, path in enumerate(paths):
            table = pacsv.read_csv(pa.py_buffer(path.read_bytes()))
            pq.write_table(table, str(out / f"part-{i:03d}.parquet"))
        return time.perf_counter() - t0, time.process_time() - c0
    return run


def loop_run(paths: list[Path]) -> Callable[[], float]:
    """In-process `for line in reader` building the custom parser's dicts, then
    Table.from_pylist per fragment (no Parquet: the same as the read-phase baseline)."""
    cols = workload.COLUMNS

    def run() -> Timing:
        c0, t0 = time.process_time(), time.perf_counter()
        for path in paths:
            reader = io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8")
            next(reader)
            dicts = []
            for line in reader:
                dicts.append(dict(zip(cols, line.rstrip("\n").split(","), strict=False)))
            pa.Table.from_pylist(dicts)
        return time.perf_counter() - t0, time.process_time() - c0
    return run


def build_images(conns: list[Connector]) -> None:
    """Builds (or finds) each connector's image outside any timing."""
    from worker.sandbox.docker import DockerSandbox

    box = DockerSandbox()
    for c in conns:
        box.image_for(c)


# --------------------------------------------------------------------------- queue mode


@dataclass
class QueueCli:
    """Workers running and warmed; `run` times `connector refresh NAME --tenant T
    --queue --wait --json` as a user runs it. `pid` is the workers' supervisor."""

    run: Callable[[Connector, int], float]
    pid: int


@contextlib.contextmanager
def queue_cli(report: Report, work: Workdir, workers: int, sandbox: str,
              conns: list[Connector],
              cold: frozenset[str] = frozenset()) -> Iterator[QueueCli | None]:
    """Workers for `sandbox` running and warmed on every connector (image, bundle, a
    warm session in each worker process) but those named in `cold` (a warm-up refresh
    of 100,000 fragments would take as long as the measured one)."""
    from bench import queued

    qb = queued.open_bench(report, work, workers)
    if qb is None:
        yield None
        return
    with qb:
        names = {c.spec.name: qb.deploy(c) for c in conns}
        with qb.workers(sandbox, workers) as proc:
            for c in conns:
                if c.spec.name in cold:
                    continue
                qb.reset(names[c.spec.name])
                qb.refresh(names[c.spec.name])

            def run(conn: Connector, rows: int) -> float:
                name = names[conn.spec.name]

                def once() -> float:
                    qb.reset(name)
                    return cli(["refresh", name, "--tenant", qb.tenant, "--queue", "--wait",
                                "--json"], env=qb.env, expect_rows=rows)[0]
                return retried(once)
            yield QueueCli(run, proc.pid)
        left = qb.containers_left()
        if left:
            report.note(f"queue mode: LEFTOVER {left} container(s) of {qb.tenant}")
        for left_note in qb.leftovers:
            report.note(f"queue mode: LEFTOVER {left_note}")


# --------------------------------------------------------------------------- run


@dataclass
class E2E:
    """What one run measured, for callers that print more (bench-peers)."""

    limit: Slope
    paths: dict[str, Slope]
    loop: Slope | None = None
    # the limit's small and big runs, for callers that pair their own figures with it
    limit_runs: tuple[Callable[[], Timing], Callable[[], Timing]] | None = None


def run(report: Report, work: Workdir, *, fragments: int, rows: int, big_rows: int,
        repeats: int, sandboxes: list[str], queue_workers: int,
        concurrency: int | None = None, custom: bool = True,
        wl: Workload | None = None) -> E2E:
    wl = wl or Workload("project")
    small_n, big_n = fragments * rows, fragments * big_rows
    section(f"end to end (slope): `connector refresh` at {fragments} x {rows:,} and "
            f"{fragments} x {big_rows:,} rows, {wl.name} workload, best of {repeats}")
    small = e2e_connector(work, wl, "e2e_small", fragments, rows)
    big = e2e_connector(work, wl, "e2e_big", fragments, big_rows)
    lims = (limit_run(work, fragment_paths(small, fragments)),
            limit_run(work, fragment_paths(big, fragments)))
    lim = slope(small_n, big_n, repeats, *lims)
    report.add(Result("in-process limit: read_csv (threads) + write_table", lim.rps,
                      "rows/s", note=lim.note()))
    result = E2E(lim, {}, limit_runs=lims)
    targets = {"process": 0.85, "docker": 0.75}
    kinds = [k for k in sandboxes if k != "docker" or docker_available()]
    if "docker" in sandboxes and "docker" not in kinds:
        report.note("docker: no engine answers; skipped")
    if "docker" in kinds:
        build_images([small, big])
    for kind in kinds:
        s = slope(small_n, big_n, repeats,
                  local_refresh(work, small, kind, small_n, concurrency),
                  local_refresh(work, big, kind, big_n, concurrency), paired=lims)
        result.paths[kind] = s
        report.add(paired_result(f"`connector refresh --sandbox {kind}`", s,
                                 "in-process limit", targets[kind]))
    queue_kind = "docker" if "docker" in kinds else (kinds[0] if kinds else None)
    if queue_workers > 0 and queue_kind:
        qsmall, qbig, qnote = small, big, ""
        if wl.peers_dir is not None:
            # A deployed bundle is capped at 64 MiB: distinct 35 MB files per fragment
            # do not fit, the project's one shared file does (same 8 columns, ~89 bytes
            # a row in both).
            project = Workload("project")
            qsmall = e2e_connector(work, project, "e2e_q_small", fragments, rows)
            qbig = e2e_connector(work, project, "e2e_q_big", fragments, big_rows)
            qnote = "project CSV (bundle cap); "
        with queue_cli(report, work, queue_workers, queue_kind, [qsmall, qbig]) as q:
            if q is not None:
                s = slope(small_n, big_n, repeats, lambda: q.run(qsmall, small_n),
                          lambda: q.run(qbig, big_n), paired=lims)
                result.paths[f"queue-{queue_kind}"] = s
                report.add(paired_result(f"queue mode, {queue_kind} sandbox, {queue_workers} "
                                         "workers (`refresh --queue --wait`)", s,
                                         "in-process limit", 0.7, qnote))
    if custom and "process" in kinds:
        result.loop = run_custom(report, work, wl, fragments, rows, big_rows, repeats,
                                 concurrency, result)
    return result


def run_custom(report: Report, work: Workdir, wl: Workload, fragments: int, rows: int,
               big_rows: int, repeats: int, concurrency: int | None, result: E2E) -> Slope:
    small_n, big_n = fragments * rows, fragments * big_rows
    small = e2e_connector(work, wl, "e2e_custom_small", fragments, rows, custom=True)
    big = e2e_connector(work, wl, "e2e_custom_big", fragments, big_rows, custom=True)
    loops = (loop_run(fragment_paths(small, fragments)),
             loop_run(fragment_paths(big, fragments)))
    s = slope(small_n, big_n, repeats,
              local_refresh(work, small, "process", small_n, concurrency),
              local_refresh(work, big, "process", big_n, concurrency), paired=loops)
    assert s.base is not None
    report.add(Result("in-process `for line in reader` + Table.from_pylist", s.base.rps,
                      "rows/s", note=s.base.note()))
    result.paths["custom-process"] = s
    report.add(paired_result("custom parser, `connector refresh --sandbox process`", s,
                             "in-process loop", 0.8))
    return s.base


def paired_result(name: str, s: Slope, base_name: str, target: float,
                  note: str = "") -> Result:
    """A figure judged against the baseline measured interleaved with it; the CPU
    ratio (baseline CPU per row / this one's) is noted where both were measured."""
    assert s.base is not None
    base = s.base.rps
    cpu, base_cpu = s.cpu_us_per_row, s.base.cpu_us_per_row
    cpu_note = (f"CPU ratio {base_cpu / cpu:.2f}x; " if cpu and base_cpu else "")
    return Result(name, s.rps, "rows/s", base, f"{base_name}, interleaved", f">= {target}x",
                  s.rps / base >= target,
                  note=f"{note}{cpu_note}{s.note()}; baseline {s.base.note()}")


def peers_dir_default() -> Path:
    return Path(os.environ.get("PEERS_DIR", ROOT.parent / "shared" / "peers"))
