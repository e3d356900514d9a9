"""Scale: refresh time against fragment count and fragment size, with peak memory.

- Fragment count: N one-row fragments (default 1,000 and 10,000; `--scale-counts`
  takes 100000 too, which takes minutes in queue mode).
- Fragment size: one CSV fragment of S bytes streamed by the connector in 1 MiB
  blocks (default 1 MiB, 64 MiB, 512 MiB, 2 GiB; `--scale-sizes`).

Each is a first refresh (everything read) of `connector refresh` as a subprocess:
local with `--sandbox process` and `--sandbox docker`, and queue mode (docker, 2
workers, `refresh --queue --wait`, workers warmed by one untimed refresh of the same
connector, up to WARM_MAX fragments). Peak memory, sampled every 50 ms from /proc and
the container's cgroup:
- local: host = the CLI process (VmHWM at its last sample and sampled VmRSS); sandbox =
  the largest runtime process (process sandbox, VmHWM) or the container's cgroup peak
  (docker; cgroup v1's peak counts page cache too, so its anon share is noted);
- queue mode: host = the largest worker process's VmRSS during the refresh (sampled);
  sandbox = the container's cgroup peak.
Growth is judged by the per-fragment (count) or per-MiB (size) time staying flat or
falling as N or S grows, and memory by staying flat in S.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import workload
from bench.common import (
    Report,
    Result,
    Sampler,
    Workdir,
    docker_available,
    mib,
    rss_kib,
    section,
)
from bench.e2e import CONNECTOR_BIN, ROOT, build_images, queue_cli, retried
from bench.memory import ContainerWatch
from worker.spec import Connector, parse_size

# Queue mode warms the workers with an untimed refresh of each connector, except counts
# above this: the connector's image and bundle are then loaded by the measured refresh.
WARM_MAX = 10_000
LIMITS = "limits: {memory: 512m, max_output_bytes: 8g, timeout: 3600}\n"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _is_runtime(pid: int) -> bool:
    try:
        return b"worker.runtime" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class ProcWatch:
    """Peak memory of a process tree: runtimes (sandbox) apart from the rest (host)."""

    def __init__(self, root: int, root_is_host: bool) -> None:
        self.root, self.root_is_host = root, root_is_host
        self.host = 0
        self.sandbox = 0

    def read(self) -> int | None:
        for pid in _tree(self.root):
            with contextlib.suppress(OSError):
                rss, hwm = rss_kib(pid)
                if _is_runtime(pid):
                    self.sandbox = max(self.sandbox, hwm << 10)
                elif pid == self.root and self.root_is_host:
                    self.host = max(self.host, max(rss, hwm) << 10)
                elif not self.root_is_host:  # queue mode: the workers, VmHWM spans warm-up
                    self.host = max(self.host, rss << 10)
        return self.host


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + sys) the live processes under `pid` have used so far: the
    queue workers run every job in their own process, so a refresh's host CPU is the
    difference across it (containers are not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


@dataclass
class Run:
    seconds: float
    host: int
    sandbox: int
    note: str = ""


def watched(run: Callable[[], float], root: Callable[[], int], root_is_host: bool,
            container: str | None) -> Run:
    """Runs `run` while sampling the process tree under `root()` (and a container)."""
    watch = ProcWatch(0, root_is_host)
    cw = ContainerWatch(container) if container else None

    def sample() -> int | None:
        pid = root()
        if not pid:
            return None
        watch.root = pid
        return watch.read()

    with Sampler(sample) as _, Sampler(cw.read if cw else lambda: None, 0.05) as _c:
        secs = run()
    if cw:
        return Run(secs, watch.host, cw.peak, f"container anon peak {mib(cw.rss_peak):.0f} MiB")
    return Run(secs, watch.host, watch.sandbox)


class LocalCli:
    """`connector refresh PATH --sandbox K --json` with its pid visible to a sampler."""

    def __init__(self, work: Workdir, conn: Connector, sandbox: str, rows: int) -> None:
        self.work, self.conn, self.sandbox, self.rows = work, conn, sandbox, rows
        self.pid = 0

    def __call__(self) -> float:
        out = self.work.fresh_output(f"scale-{self.sandbox}-{self.conn.spec.name}")
        t0 = time.perf_counter()
        p = subprocess.Popen([str(CONNECTOR_BIN), "refresh", str(self.conn.path), "--output",
                              str(out), "--sandbox", self.sandbox, "--json"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = p.pid
        stdout, stderr = p.communicate()
        secs = time.perf_counter() - t0
        self.pid = 0
        counts = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
        if p.returncode != 0 or counts.get("rows") != self.rows:
            raise RuntimeError(f"bench scale: refresh exited {p.returncode}, {counts}, "
                               f"expected {self.rows} rows\n{stderr[-3000:]}")
        return secs


def count_connector(work: Workdir, n: int) -> Connector:
    name = f"scale_count_{n}"
    return work.connector(name, workload.TINY_CODE, workload.TINY_SPEC.replace(
        "bench_tiny", name), {"fragments.txt": str(n).encode()})


def size_connector(work: Workdir, size: int) -> Connector:
    name = f"scale_size_{size >> 20}m"
    return work.connector(name, workload.BIG_CODE, workload.csv_spec(name) + LIMITS,
                          {"data.csv": workload.csv_bytes(), "size.txt": str(size).encode()})


def size_rows(conn: Connector, size: int) -> int:
    """Rows of the BIG_CODE fragment: whole 1 MiB blocks of lines until `size` is passed."""
    data = (conn.path / "data.csv").read_bytes()
    lines = data.partition(b"\n")[2].splitlines(keepends=True)
    block, i = 0, 0
    while block < workload.CHUNK:
        block += len(lines[i % len(lines)])
        i += 1
    blocks = -(-size // block)
    return blocks * i


def _fmt(r: Run) -> str:
    return f"host {mib(r.host):.0f} MiB, sandbox {mib(r.sandbox):.0f} MiB" + (
        f" ({r.note})" if r.note else "")


def run(report: Report, work: Workdir, *, counts: list[int], sizes: list[int],
        sandboxes: list[str], queue_workers: int, local: bool = True) -> None:
    section(f"scale: one-row fragments {counts}; one fragment of "
            f"{[f'{s >> 20} MiB' for s in sizes]}")
    kinds = [k for k in sandboxes if k != "docker" or docker_available()]
    cases: list[tuple[str, Connector, int, int]] = []  # (what, connector, rows, unit)
    for n in counts:
        cases.append((f"{n:,} one-row fragments", count_connector(work, n), n, n))
    for s in sizes:
        c = size_connector(work, s)
        cases.append((f"one {s >> 20} MiB fragment", c, size_rows(c, s), s))
    if "docker" in kinds:
        build_images([c for _, c, _, _ in cases])
    for kind in kinds if local else []:
        prev: dict[bool, tuple[int, float]] = {}
        for what, conn, rows, unit in cases:
            cli = LocalCli(work, conn, kind, rows)
            r = retried(lambda cli=cli, conn=conn, kind=kind: watched(
                cli, lambda: cli.pid, True, conn.spec.name if kind == "docker" else None))
            report.add(Result(f"scale, local {kind}: {what}", r.seconds, "s",
                              note=_per(what, unit, r.seconds, rows, prev) + "; " + _fmt(r)))
    if queue_workers > 0 and "docker" in kinds:
        conns = [c for _, c, _, _ in cases]
        cold = frozenset(c.spec.name for what, c, _, unit in cases
                         if "one-row" in what and unit > WARM_MAX)
        with queue_cli(report, work, queue_workers, "docker", conns, cold) as q:
            if q is None:
                return
            prev = {}
            for what, conn, rows, unit in cases:
                cpu0 = tree_cpu(q.pid)
                r = watched(lambda conn=conn, rows=rows: q.run(conn, rows), lambda: q.pid,
                            False, conn.spec.name)
                cpu = tree_cpu(q.pid) - cpu0
                report.add(Result(f"scale, queue docker x{queue_workers}: {what}", r.seconds,
                                  "s", note=_per(what, unit, r.seconds, rows, prev) + "; "
                                  + _fmt(r) + f"; workers' CPU {cpu:.1f} s"
                                  + (" (cold: not warmed)" if conn.spec.name in cold else "")
                                  + (f" ({cpu / unit * 1e3:.2f} ms/fragment)"
                                     if "one-row" in what else "")))


def _per(what: str, unit: int, secs: float, rows: int,
         prev: dict[bool, tuple[int, float]]) -> str:
    """Average and marginal cost: the marginal one (extra time / extra units since the
    previous, smaller case) cancels start-up and is the figure that shows the growth."""
    count = "one-row" in what
    last = prev.get(count)
    prev[count] = (unit, secs)
    if count:
        text = f"{unit / secs:,.0f} fragments/s"
        if last:
            text += f", marginal {(secs - last[1]) / (unit - last[0]) * 1e3:.2f} ms/fragment"
        return text
    text = f"{rows / secs:,.0f} rows/s"
    if last:
        text += f", marginal {(secs - last[1]) / ((unit - last[0]) / (1 << 20)) * 1e3:.1f} ms/MiB"
    return text


def parse_list(text: str, size: bool = False) -> list[int]:
    return [parse_size(x) if size else int(x) for x in text.split(",") if x.strip()]
