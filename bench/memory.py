"""Target 4: one big fragment streams through with bounded memory.

The refresh runs in a child process (`python -m bench.memory --child ...`) so the host
figure is that process's own peak RSS (VmHWM from /proc, plus VmRSS sampled every
50 ms), untouched by the other benchmarks. The container's peak comes from its memory
cgroup (v2 memory.peak, v1 memory.max_usage_in_bytes), sampled while it runs because the
cgroup disappears with the container; its anonymous-memory share (rss from memory.stat)
is reported too, since the v1 peak also counts page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.common import (
    Report,
    Result,
    Sampler,
    TimedSandbox,
    Workdir,
    cgroup_peak,
    cgroup_stat,
    container_cgroup_dir,
    make_sandbox,
    mib,
    rss_kib,
    runnable,
    section,
    timed_refresh,
)
from worker.spec import load_connector

HOST_LIMIT_MB = 300
CONTAINER_LIMIT = 512 << 20
ROOT = Path(__file__).resolve().parents[1]


def _children_rss() -> int:
    """Summed VmRSS (bytes) of this process's child processes (the process sandbox)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in kids:
            with contextlib.suppress(OSError):
                total += rss_kib(pid)[0] << 10
    return total


class ContainerWatch:
    """Finds the connector's container and tracks its cgroup peak while it lives."""

    def __init__(self, name: str) -> None:
        import docker

        self._api = docker.from_env().api
        self._name = name
        self._dir: Path | None = None
        self.peak = 0
        self.peak_file = ""
        self.rss_peak = 0

    def read(self) -> int | None:
        if self._dir is None or not self._dir.exists():
            cs = self._api.containers(filters={"label": f"io.connector.name={self._name}"})
            if not cs:
                return None
            self._dir = container_cgroup_dir(cs[0]["Id"])
            if self._dir is None:
                return None
        peak, self.peak_file = cgroup_peak(self._dir)
        stat = cgroup_stat(self._dir)
        self.rss_peak = max(self.rss_peak, stat.get("rss", stat.get("anon", 0)))
        self.peak = max(self.peak, peak)
        return peak


def child(args: argparse.Namespace) -> None:
    connector = load_connector(args.connector)
    box = TimedSandbox(make_sandbox(args.sandbox))
    if args.sandbox == "docker":
        box.inner.image_for(connector)  # type: ignore[attr-defined]
    watch = ContainerWatch(connector.spec.name) if args.sandbox == "docker" else None
    with Sampler(lambda: rss_kib()[0] << 10) as host, \
            Sampler(watch.read if watch else _children_rss, 0.1) as sandbox:
        t = timed_refresh(connector, box, Path(args.out), 1)
    out: dict[str, Any] = {
        "rows": t.summary.rows, "seconds": t.read_phase,
        "host_hwm": rss_kib()[1] << 10, "host_sampled": host.peak,
        "sandbox_peak": watch.peak if watch else sandbox.peak,
        "sandbox_rss_peak": watch.rss_peak if watch else sandbox.peak,
        "peak_file": watch.peak_file if watch else "VmRSS of children",
        "samples": sandbox.samples,
    }
    print(json.dumps(out))


def run(report: Report, work: Workdir, *, size: int, sandboxes: list[str]) -> None:
    section(f"memory: one {size / (1 << 30):.2f} GiB CSV fragment")
    spec = (workload.csv_spec("bench_big") +
            "limits: {memory: 512m, max_output_bytes: 64g, timeout: 7200}\n")
    conn = work.connector("bench_big", workload.BIG_CODE, spec,
                          {"data.csv": workload.csv_bytes(),
                           "size.txt": str(size).encode()})
    for kind in runnable(report, sandboxes):
        out = work.fresh_output(f"big-{kind}")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", "--sandbox", kind,
             "--connector", str(conn.path), "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            report.note(f"{kind}: big fragment failed: {proc.stderr.strip()[-800:]}")
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        wall = time.perf_counter() - t0
        host_mb = mib(max(m["host_hwm"], m["host_sampled"]))
        report.add(Result(f"{kind}: host (worker) peak RSS", host_mb, "MiB",
                          target=f"< {HOST_LIMIT_MB} MiB", passed=host_mb < HOST_LIMIT_MB,
                          note=f"{m['rows']:,} rows in {m['seconds']:.1f} s "
                               f"({m['rows'] / m['seconds']:,.0f} rows/s), wall {wall:.0f} s"))
        sb_mb = mib(m["sandbox_peak"])
        if kind == "docker":
            report.add(Result("docker: container peak memory", sb_mb, "MiB",
                              target="< 512 MiB limit",
                              passed=m["samples"] > 0 and m["sandbox_peak"] < CONTAINER_LIMIT,
                              note=f"{m['peak_file']}; anon rss peak "
                                   f"{mib(m['sandbox_rss_peak']):.0f} MiB; "
                                   f"{m['samples']} samples"))
        else:
            report.add(Result("process: runtime peak RSS (sampled)", sb_mb, "MiB",
                              note="rlimit AS = memory + 384 MiB slack"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--sandbox", default="docker")
    p.add_argument("--connector")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args)


if __name__ == "__main__":
    main()
