"""Where a refresh's CPU goes, per process, for either sandbox (`python -m bench.cpuwhere`).

Runs `connector refresh` on the e2e workload at two sizes (8 x 100,000 and 8 x 400,000
rows by default; `--workload peers` for $PEERS_DIR/workload.py's distinct fragments, the
bytes `make bench-peers` reads) and samples, every 50 ms, the CPU seconds (user + sys) of:

- `cli`: the `connector refresh` process itself (the host side: frames, Parquet);
- `runtime` / `user`: the sandbox's runtime process(es) and the user process (shim.py),
  found among the CLI's descendants (process sandbox) or in the container's cgroup;
- `container`: the container's whole cgroup (cpuacct.usage: runtime, user process, tini),
  with its CFS throttling (cpu.stat nr_periods, nr_throttled, throttled_time);
- `shim`: the containerd-shim of each of the run's containers;
- `dockerd`, `containerd`: the engine's daemons (shared with the box: others' work
  counts too, so run it on a quiet box or read it as an upper bound).

The per-row figure is the slope between the two sizes, like e2e.py's, so start-up costs
cancel. The last < 50 ms of each process is missed (a constant, cancelled by the slope).
Variants run interleaved (`--sandbox docker:attach,docker:socket` compares the two
Docker links on the same build; `process,docker` the two sandboxes); per variant and
size the run of least total CPU is shown, and the wall slope from the best walls.

    python -m bench.cpuwhere --sandbox process,docker:attach,docker:socket --repeats 3
    python -m bench.cpuwhere --workload peers --sandbox process,docker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import e2e  # noqa: E402
from bench.common import Workdir  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")
CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker")
CPU = Path("/sys/fs/cgroup/cpu/docker")
OWNER = "io.connector.owner"


def _stat(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _cpu(pid: int | str) -> float:
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / _TICK


def _cmdline(pid: int | str) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _pid_of(comm: str) -> int | None:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as f:
                    if f.read().strip() == comm:
                        return int(name)
            except OSError:
                continue
    return None


class CpuWhere:
    """Samples the processes of one `connector refresh` (pid `cli`) until `stop()`."""

    def __init__(self, cli: int) -> None:
        self._cli = cli
        self._owner = f"{socket.gethostname()}:{cli}"
        self._daemons = {k: p for k in ("dockerd", "containerd") if (p := _pid_of(k))}
        self._daemon0 = {k: _cpu(p) for k, p in self._daemons.items()}
        self._seen: dict[tuple[str, int], float] = {}
        self._containers: dict[str, bool] = {}  # cgroup id -> ours
        self._cg: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._t.join()
        out: dict[str, float] = defaultdict(float)
        for (kind, _), v in self._seen.items():
            out[kind] += v
        for k, p in self._daemons.items():
            with contextlib.suppress(OSError):
                out[k] = _cpu(p) - self._daemon0[k]
        for stats in self._cg.values():
            for k, v in stats.items():
                out[k] += v
        out["containers"] = sum(self._containers.values())
        return dict(out)

    def _ours(self, cid: str) -> bool:
        if cid not in self._containers:
            try:
                out = subprocess.run(
                    ["docker", "inspect", "-f", f'{{{{index .Config.Labels "{OWNER}"}}}}', cid],
                    capture_output=True, text=True, timeout=10).stdout.strip()
            except subprocess.TimeoutExpired:
                out = ""
            self._containers[cid] = out == self._owner
        return self._containers[cid]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.05)
        self._sample()

    def _sample(self) -> None:
        # the CLI and its descendants (process sandbox: runtime and user processes)
        children: dict[int, list[int]] = defaultdict(list)
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    children[int(_stat(name)[1])].append(int(name))
                except (OSError, IndexError, ValueError):
                    continue
        todo = [self._cli]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, ()))
            self._note(pid, "cli" if pid == self._cli else None)
        if not CPUACCT.is_dir():
            return
        for d in CPUACCT.iterdir():
            if not d.is_dir() or not self._ours(d.name):
                continue
            try:
                usage = int((d / "cpuacct.usage").read_text()) / 1e9
                stat = dict(line.split() for line in (CPU / d.name / "cpu.stat")
                            .read_text().splitlines())
                pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
            self._cg[d.name] = {
                "container": usage,
                "nr_periods": float(stat.get("nr_periods", 0)),
                "nr_throttled": float(stat.get("nr_throttled", 0)),
                "throttled_s": int(stat.get("throttled_time", 0)) / 1e9,
            }
            for pid in pids:
                self._note(pid, None)
            shim = self._shim_of(d.name)
            if shim:
                self._note(shim, "shim")

    def _shim_of(self, cid: str) -> int | None:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    cmd = _cmdline(name)
                except OSError:
                    continue
                if b"containerd-shim" in cmd and cid.encode() in cmd:
                    return int(name)
        return None

    def _note(self, pid: int, kind: str | None) -> None:
        try:
            if kind is None:
                cmd = _cmdline(pid)
                if not cmd:
                    return  # a zombie: its CPU was already seen under its own kind
                kind = ("user" if b"shim.py" in cmd else
                        "runtime" if b"worker.runtime" in cmd else "other")
            self._seen[(kind, pid)] = _cpu(pid)
        except (OSError, IndexError, ValueError):
            return


def measure(conn_path: Path, out: Path, sandbox: str, rows: int,
            env: dict[str, str] | None = None) -> tuple[float, dict[str, float]]:
    args = [str(e2e.CONNECTOR_BIN), "refresh", str(conn_path), "--output", str(out),
            "--sandbox", sandbox, "--json"]
    t0 = time.perf_counter()
    with subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}) as p:
        where = CpuWhere(p.pid)
        o, err = p.communicate()
    wall = time.perf_counter() - t0
    cpu = where.stop()
    lines = [ln for ln in o.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines or json.loads(lines[-1]).get("rows") != rows:
        raise RuntimeError(f"refresh failed ({p.returncode}): {o[-500:]} {err[-2000:]}")
    return wall, cpu


KEYS = ["wall", "cli", "runtime", "user", "container", "shim", "dockerd",
        "containerd", "nr_periods", "nr_throttled", "throttled_s"]


def variants(spec: str, work: Workdir | None = None) -> list[tuple[str, str, dict[str, str]]]:
    """`process,docker`, `docker:attach,docker:socket` or `docker@main,docker`: (label,
    sandbox, env). `@REV` runs the CLI of git revision REV (a `git archive` of it on
    PYTHONPATH, same venv), for before/after comparisons in one interleaved loop."""
    out = []
    trees: dict[str, Path] = {}
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        rest, _, rev = item.partition("@")
        sandbox, _, link = rest.partition(":")
        env = {"CONNECTOR_DOCKER_LINK": link} if link else {}
        if rev:
            if work is None:
                raise SystemExit(f"cpuwhere: {item}: a revision needs a work dir")
            if rev not in trees:
                trees[rev] = revision_tree(work, rev)
            env["PYTHONPATH"] = str(trees[rev])
        out.append((item, sandbox, env))
    return out


def revision_tree(work: Workdir, rev: str) -> Path:
    """The project's files at git revision `rev`, unpacked under the work dir."""
    dest = work.path / "rev" / rev.replace("/", "_")
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default="process,docker",
                    help="variants, interleaved: process, docker, docker:attach, "
                    "docker:socket (CONNECTOR_DOCKER_LINK); SANDBOX@REV runs git "
                    "revision REV's CLI (e.g. docker@main,docker)")
    ap.add_argument("--fragments", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--big-rows", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workload", choices=["project", "peers"], default="project",
                    help="the project's one shared CSV, or $PEERS_DIR/workload.py's")
    ap.add_argument("--peers-dir", type=Path, default=e2e.peers_dir_default())
    args = ap.parse_args(argv)
    work = Workdir()
    wl = e2e.Workload(args.workload, args.peers_dir if args.workload == "peers" else None)
    try:
        sizes = {"small": (args.rows, e2e.e2e_connector(work, wl, "cpu_small", args.fragments,
                                                        args.rows)),
                 "big": (args.big_rows, e2e.e2e_connector(work, wl, "cpu_big",
                                                          args.fragments, args.big_rows))}
        runs = variants(args.sandbox, work)
        if any(sandbox == "docker" for _, sandbox, _ in runs):
            e2e.build_images([c for _, c in sizes.values()])
        best: dict[str, dict[str, dict[str, float]]] = {label: {} for label, _, _ in runs}
        for _label, sandbox, env in runs:  # warm: page cache, images
            measure(sizes["small"][1].path, work.fresh_output("warm"), sandbox,
                    sizes["small"][0] * args.fragments, env)
        # interleaved (a small, b small, a big, b big, ...): load bursts hit all alike
        for _ in range(args.repeats):
            for size, (rows, conn) in sizes.items():
                for label, sandbox, env in runs:
                    wall, cpu = measure(conn.path, work.fresh_output(label), sandbox,
                                        rows * args.fragments, env)
                    cpu["wall"] = wall
                    # CPU per run moves less with load than wall: keep the least CPU
                    mine = best[label]
                    if size not in mine or _total(cpu) < _total(mine[size]):
                        mine[size] = {**cpu, "best_wall": min(
                            wall, mine.get(size, {}).get("best_wall", wall))}
                    else:
                        mine[size]["best_wall"] = min(wall, mine[size]["best_wall"])
        extra = (args.big_rows - args.rows) * args.fragments
        for label, _, _ in runs:
            b = best[label]
            print(f"\n== {label}: CPU seconds (the run of least CPU of {args.repeats}), "
                  "slope per row")
            print(f"{'':14}{'small':>10}{'big':>10}{'µs/row':>10}")
            for k in KEYS:
                sv, bv = b["small"].get(k, 0.0), b["big"].get(k, 0.0)
                unit = "" if k.startswith("nr_") else f"{(bv - sv) / extra * 1e6:10.3f}"
                print(f"{k:14}{sv:10.2f}{bv:10.2f}{unit}")
            total = (_total(b["big"]) - _total(b["small"])) / extra * 1e6
            dt = b["big"]["best_wall"] - b["small"]["best_wall"]
            print(f"{'total CPU':14}{'':20}{total:10.3f}")
            print(f"{'wall slope':14}{'':20}{extra / dt:10,.0f} rows/s (best walls "
                  f"{b['small']['best_wall']:.2f} / {b['big']['best_wall']:.2f} s)")
    finally:
        work.close()
    return 0


def _total(cpu: dict[str, float]) -> float:
    """Every process of the path: the CLI, the runtime side (the container's cgroup, or
    the runtime and user processes), the shim and the engine's daemons."""
    inner = cpu.get("container", 0.0) or cpu.get("runtime", 0.0) + cpu.get("user", 0.0)
    return inner + sum(cpu.get(k, 0.0) for k in ("cli", "shim", "dockerd", "containerd"))


if __name__ == "__main__":
    sys.exit(main())
