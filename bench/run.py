"""Run the benchmarks and print their figures (`make bench`).

    python3 bench/run.py                       # everything but scale, full sizes
    python3 bench/run.py --only e2e            # the headline: end to end, slope method
    python3 bench/run.py --only scale --scale-counts 1000,10000,100000
    python3 bench/run.py --quick               # smaller sizes, one repeat: a smoke run
    python3 bench/run.py --only throughput,overhead --sandbox process
    python3 bench/run.py --big-size 512m --listing 20000 --tiny 500

Every target is a ratio to a baseline measured in the same run, or a memory bound.
Connector folders and outputs go to a temp dir (kept with --keep).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    e2e,
    feedback,
    formats,
    incremental,
    memory,
    overhead,
    scale,
    stages,
    throughput,
)
from bench.common import Report, Workdir, cpu_info  # noqa: E402
from worker.spec import parse_size  # noqa: E402

ALL = ["e2e", "stages", "throughput", "custom", "formats", "overhead", "memory",
       "incremental", "feedback", "scale"]
# scale runs minutes of 2 GiB fragments and thousands of one-row fragments: asked for
DEFAULT = [x for x in ALL if x != "scale"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--only", default=",".join(DEFAULT),
                   help=f"comma list of {','.join(ALL)} (default: all but scale)")
    p.add_argument("--sandbox", default="process,docker", help="process,docker")
    p.add_argument("--fragments", type=int, help="CSV fragments (default 8)")
    p.add_argument("--rows", type=int, help="rows per CSV fragment (default 100000)")
    p.add_argument("--big-rows", type=int,
                   help="e2e: rows per fragment of the big size (default 400000)")
    p.add_argument("--workload", choices=["project", "peers"], default="project",
                   help="e2e: the project's CSV or $PEERS_DIR/workload.py's")
    p.add_argument("--scale-counts", default="1000,10000",
                   help="scale: one-row fragment counts (100000 takes minutes)")
    p.add_argument("--scale-sizes", default="1m,64m,512m,2g",
                   help="scale: fragment sizes")
    p.add_argument("--scale-queue-only", action="store_true",
                   help="scale: queue mode only (no local refreshes)")
    p.add_argument("--tiny", type=int, help="one-row fragments (default 2000)")
    p.add_argument("--big-size", help="the memory benchmark's fragment size (default 2g)")
    p.add_argument("--listing", type=int, help="listed fragments (default 100000)")
    p.add_argument("--repeats", type=int, help="best of N (default 3; quick 1)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="refresh concurrency for the throughput runs (default 1)")
    p.add_argument("--tiny-concurrency", type=int, default=2,
                   help="refresh concurrency for the one-row fragments (default 2)")
    p.add_argument("--queue-workers", type=int, default=2,
                   help="queue-mode worker processes (default 2; 0 skips queue mode)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)

    q = args.quick
    fragments = args.fragments or (4 if q else 8)
    rows = args.rows or (50_000 if q else 100_000)
    tiny = args.tiny or (300 if q else 2000)
    big = parse_size(args.big_size or ("256m" if q else "2g"))
    listing = args.listing or (20_000 if q else 100_000)
    repeats = args.repeats or (1 if q else 3)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    sandboxes = [x.strip() for x in args.sandbox.split(",") if x.strip()]

    print(f"machine: {cpu_info()}; python {sys.version.split()[0]}")
    report = Report()
    work = Workdir(keep=args.keep)
    t0 = time.perf_counter()
    try:
        if "e2e" in only:
            wl = e2e.Workload(args.workload, e2e.peers_dir_default()
                              if args.workload == "peers" else None)
            e2e.run(report, work, fragments=fragments, rows=rows,
                    big_rows=args.big_rows or (4 * rows), repeats=repeats,
                    sandboxes=sandboxes, queue_workers=args.queue_workers, wl=wl)
        if "stages" in only:
            stages.run(report, work, fragments=min(fragments, 4), rows=rows)
        if "throughput" in only:
            throughput.run(report, work, fragments=fragments, rows=rows, repeats=repeats,
                           sandboxes=sandboxes, concurrency=args.concurrency,
                           queue_workers=args.queue_workers)
        if "custom" in only:
            throughput.run_custom(report, work, fragments=fragments, rows=rows,
                                  repeats=repeats, concurrency=args.concurrency)
        if "formats" in only:
            formats.run(report, rows=rows, repeats=max(3, repeats))
        if "overhead" in only:
            overhead.run(report, work, fragments=tiny, repeats=repeats,
                         concurrency=args.tiny_concurrency, sandboxes=sandboxes,
                         queue_workers=args.queue_workers)
        if "memory" in only:
            memory.run(report, work, size=big, sandboxes=sandboxes)
        if "feedback" in only:
            feedback.run(report, work, repeats=max(3, repeats))
        if "scale" in only:
            scale.run(report, work, counts=scale.parse_list(args.scale_counts),
                      sizes=scale.parse_list(args.scale_sizes, size=True),
                      sandboxes=sandboxes, queue_workers=args.queue_workers,
                      local=not args.scale_queue_only)
        if "incremental" in only:
            incremental.run(report, work, fragments=listing, repeats=repeats,
                            sandboxes=sandboxes)
    finally:
        work.close()
    print(f"\n== results ({time.perf_counter() - t0:.0f} s)\n")
    print(report.table())
    failed = [r for r in report.results if r.passed is False]
    if failed:
        print(f"\n{len(failed)} target(s) missed: " + "; ".join(r.name for r in failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
