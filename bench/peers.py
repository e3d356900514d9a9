"""The peers (dlt, singer-sdk, airbyte-cdk, pyarrow baselines) and the project on one
workload in one run: one table of rows/s and the ratio to the in-process limit.

    make bench-peers                         # venvs created by make, then this
    python3 bench/peers.py --only dlt        # peer jobs whose label contains "dlt"
    python3 bench/peers.py --no-project      # the peers alone

The peer scripts are not copied: they are run from $PEERS_DIR (default
../shared/peers next to the repo), each under the python of its own venv in
$PEER_VENVS/<venv> (default .peer-venvs/, created by `make bench-peers`).

The workload is $PEERS_DIR/workload.py's generator (PEER_N fragments x PEER_R rows);
the project reads the very same bytes (`e2e.Workload("peers")`).

Methods:
- the project: `connector refresh` as a subprocess, slope between two sizes (bench/e2e.py);
- fast peers (Arrow paths, >= 0.5 M rows/s): their own timed section, slope between the
  same two sizes (what is left of per-run set-up cancels);
- slow peers (per-row Python paths, tens of thousands of rows/s): their timed section at
  one size, 8 x 25,000 rows by default (`--slow-rows`; per-row cost does not depend on
  the size, and 8 x 100,000 takes minutes each on a busy box); the limit is measured
  (one small + one big run) just before each.
The limit is measured once, in this run (the project's in-process read_csv with default
threads + write_table slope on the same files); every ratio is to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import e2e  # noqa: E402
from bench.common import Report, Workdir, cpu_info  # noqa: E402


@dataclass(frozen=True)
class Job:
    label: str
    venv: str
    script: str
    args: tuple[str, ...]
    fast: bool  # slope over two sizes; else the small size's timed section


JOBS = [
    Job("pyarrow read_csv -> write_table (peer baseline script)", "baseline",
        "bench_baseline.py", ("--variant", "arrow"), True),
    Job("dlt: Arrow table per fragment -> filesystem/parquet", "dlt", "bench_dlt.py",
        ("--variant", "arrow"), True),
    Job("pyarrow: DictReader(str) -> from_pylist -> parquet", "baseline",
        "bench_baseline.py", ("--variant", "pylist"), False),
    Job("dlt: one typed dict per yield -> filesystem/parquet", "dlt", "bench_dlt.py",
        ("--variant", "rows-typed"), False),
    Job("singer-sdk: tap -> /dev/null", "singer", "bench_singer.py", (), False),
    Job("airbyte-cdk: source read -> /dev/null", "airbyte", "bench_airbyte.py", (), False),
]


@dataclass
class Row:
    label: str
    method: str
    rps: float
    ratio: float  # to the in-process limit measured next to it
    note: str = ""


def run_peer(peers: Path, venvs: Path, job: Job, fragments: int, rows: int) -> float:
    """The job's own timed section (seconds) at fragments x rows."""
    py = venvs / job.venv / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"bench-peers: no venv {py.parent.parent} (run `make bench-peers`)")
    env = {**os.environ, "PEER_N": str(fragments), "PEER_R": str(rows)}
    with tempfile.TemporaryDirectory(prefix="peerrun_") as tmp:
        res = Path(tmp) / "result.json"
        p = subprocess.run([str(py), str(peers / job.script), *job.args, "--result", str(res)],
                           env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{job.label}: exit {p.returncode}\n{p.stderr[-3000:]}")
        r = json.loads(res.read_text())
    if r["rows"] != fragments * rows:
        raise RuntimeError(f"{job.label}: {r['rows']} rows, expected {fragments * rows}")
    return float(r["timed_s"])


def peer_row(peers: Path, venvs: Path, job: Job, fragments: int, rows: int, big_rows: int,
             repeats: int, limit: tuple[Callable[[], e2e.Timing], Callable[[], e2e.Timing]],
             slow_rows: int) -> Row:
    """The job's figure and its ratio to the limit measured interleaved with it (fast
    jobs) or just before it (slow jobs: one small + one big limit run)."""
    small_n, big_n = fragments * rows, fragments * big_rows
    if job.fast:
        s = e2e.slope(small_n, big_n, repeats,
                      lambda: run_peer(peers, venvs, job, fragments, rows),
                      lambda: run_peer(peers, venvs, job, fragments, big_rows), paired=limit)
        assert s.base is not None
        return Row(job.label, "slope, timed section", s.rps, s.rps / s.base.rps,
                   f"{s.note()}; limit {s.base.rps:,.0f} rows/s ({s.base.note()})")
    lim = e2e.slope(small_n, big_n, 1, *limit)
    n = fragments * slow_rows
    t = run_peer(peers, venvs, job, fragments, slow_rows)
    return Row(job.label, f"timed section, {n:,} rows", n / t, n / t / lim.rps,
               f"{t:.2f} s; limit just before {lim.rps:,.0f} rows/s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers-dir", type=Path, default=e2e.peers_dir_default())
    p.add_argument("--venvs", type=Path,
                   default=Path(os.environ.get("PEER_VENVS", ROOT / ".peer-venvs")))
    p.add_argument("--fragments", type=int, default=8)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--big-rows", type=int, default=400_000)
    p.add_argument("--repeats", type=int, default=3, help="best of N per size (slopes)")
    p.add_argument("--slow-rows", type=int, default=25_000,
                   help="rows per fragment for the per-row Python peers (0: --rows)")
    p.add_argument("--only", default="", help="peer jobs whose label contains this")
    p.add_argument("--no-project", action="store_true", help="the peers alone")
    p.add_argument("--sandbox", default="process,docker")
    p.add_argument("--queue-workers", type=int, default=2)
    args = p.parse_args(argv)
    peers = args.peers_dir.resolve()
    if not (peers / "workload.py").is_file():
        p.error(f"no peers at {peers} (set PEERS_DIR or --peers-dir)")

    print(f"machine: {cpu_info()}; python {sys.version.split()[0]}; peers {peers}")
    t0 = time.perf_counter()
    report = Report()
    work = Workdir()
    rows: list[Row] = []
    try:
        sandboxes = [] if args.no_project else [
            x.strip() for x in args.sandbox.split(",") if x.strip()]
        res = e2e.run(report, work, fragments=args.fragments, rows=args.rows,
                      big_rows=args.big_rows, repeats=args.repeats, sandboxes=sandboxes,
                      queue_workers=0 if args.no_project else args.queue_workers,
                      wl=e2e.Workload("peers", peers))
        limit = res.limit.rps
        assert res.limit_runs is not None
        rows.append(Row("in-process limit: read_csv (threads) + write_table", "slope",
                        limit, 1.0, res.limit.note()))
        names = {"process": "`connector refresh --sandbox process`",
                 "docker": "`connector refresh --sandbox docker`",
                 "queue-docker": f"queue mode, docker, {args.queue_workers} workers",
                 "queue-process": f"queue mode, process, {args.queue_workers} workers",
                 "custom-process": "custom parser_function, `--sandbox process`"}
        for key, s in res.paths.items():
            method = "slope, CLI subprocess" + (
                ", project CSV (64 MiB bundle cap)" if key.startswith("queue") else "")
            assert s.base is not None
            rows.append(Row(names.get(key, key), method, s.rps, s.rps / s.base.rps,
                            f"{s.note()}; baseline {s.base.rps:,.0f} rows/s"))
        if res.loop is not None:
            rows.append(Row("in-process `for line in reader` + Table.from_pylist "
                            "(the custom parser's baseline)", "slope", res.loop.rps,
                            res.loop.rps / limit, res.loop.note()))
        for job in JOBS:
            if args.only and args.only not in job.label:
                continue
            print(f"  peer: {job.label} ...", flush=True)
            row = peer_row(peers, args.venvs, job, args.fragments, args.rows, args.big_rows,
                           args.repeats, res.limit_runs, args.slow_rows or args.rows)
            print(f"    {row.rps:,.0f} rows/s ({row.method}; {row.note})", flush=True)
            rows.append(row)
    finally:
        work.close()
    print(f"\n== peers and project, {args.fragments} x {args.rows:,} / {args.big_rows:,} "
          f"rows ({time.perf_counter() - t0:.0f} s)\n")
    print("Each ratio is to the baseline measured next to it (interleaved runs; the custom\n"
          "parser's is to the in-process loop, every other one to the in-process limit).\n")
    print("| path | method | rows/s | ratio |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r.label} | {r.method} | {r.rps:,.0f} | {r.ratio:.2f} |")
    print("\nruns (s):")
    for r in rows:
        print(f"- {r.label}: {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
