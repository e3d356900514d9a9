"""Fast feedback: `connector test` on a small connector, its Docker image already built.

Figures:
- wall time of `connector test PATH --sandbox docker` as a subprocess, from spawn to
  the first rows on its stdout (the line with the first fragment's "row(s)" title;
  rich flushes each print) and to exit; best and median of `repeats`;
- where that time goes, each piece timed alone:
  * `python -c pass` (the interpreter) and `python -c "import worker.cli"` (the CLI's
    imports), as subprocesses;
  * in-process: the Docker SDK client and reap (`DockerSandbox()`), `image_for` (code
    hash + image lookup), `open` (create, attach, start the container, the runtime's
    imports and context()), the listing and the first fragment's read;
  * in the image: `python -c pass` vs `python -c "import worker.runtime.main"` in a
    throwaway container (`docker run --rm`), whose difference is the runtime's imports.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import workload
from bench.common import Report, Result, Workdir, docker_available, section
from worker.spec import Connector

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_BIN = Path(sys.executable).parent / "connector"
FIRST_ROWS = "row(s)"


def small_connector(work: Workdir) -> Connector:
    return work.connector("bench_feedback", workload.TINY_CODE, workload.TINY_SPEC.replace(
        "bench_tiny", "bench_feedback"), {"fragments.txt": b"5"})


def time_test(conn: Connector) -> tuple[float, float]:
    """(seconds to the first rows on stdout, seconds to exit) of one `connector test`."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(CONNECTOR_BIN), "test", str(conn.path), "--sandbox", "docker"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    assert p.stdout is not None
    for line in p.stdout:
        if first is None and FIRST_ROWS in line:
            first = time.perf_counter() - t0
    _, stderr = p.communicate()
    total = time.perf_counter() - t0
    if p.returncode != 0 or first is None:
        raise RuntimeError(f"bench: connector test exited {p.returncode}:\n{stderr[-3000:]}")
    return first, total


def time_cmd(cmd: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def breakdown(conn: Connector, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds of each piece of a `connector test`, timed alone."""
    from worker.sandbox.docker import DockerSandbox

    out: dict[str, float] = {}
    py = sys.executable
    out["python -c pass"] = time_cmd([py, "-c", "pass"], repeats)
    out["python -c 'import worker.cli'"] = time_cmd([py, "-c", "import worker.cli"], repeats)
    image = DockerSandbox().image_for(conn)
    best: dict[str, float] = {}
    for _ in range(max(1, repeats)):
        marks = [time.perf_counter()]
        box = DockerSandbox()
        marks.append(time.perf_counter())
        box.image_for(conn)
        marks.append(time.perf_counter())
        session = box.open(conn, None)
        marks.append(time.perf_counter())
        try:
            listed = list(session.list())
            marks.append(time.perf_counter())
            list(session.read(listed[0]))
            marks.append(time.perf_counter())
        finally:
            session.close()
        marks.append(time.perf_counter())
        names = ["docker client + reap (DockerSandbox())", "image_for (hash + lookup)",
                 "open: container create/attach/start + runtime start + context()",
                 "list", "first read", "close (container removed)"]
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            best[name] = min(best.get(name, float("inf")), b - a)
    out.update(best)
    docker_run = ["docker", "run", "--rm", "--network", "none", image, "python", "-c"]
    out["container: docker run python -c pass"] = time_cmd([*docker_run, "pass"], repeats)
    out["container: docker run python -c 'import worker.runtime.main'"] = time_cmd(
        [*docker_run, "import worker.runtime.main"], repeats)
    return out


def run(report: Report, work: Workdir, *, repeats: int) -> None:
    section("fast feedback: `connector test` on a small connector in Docker, image built")
    if not docker_available():
        report.note("feedback: no Docker engine answers; skipped")
        return
    conn = small_connector(work)
    from worker.sandbox.docker import DockerSandbox

    DockerSandbox().image_for(conn)  # built outside the timing
    time_test(conn)  # untimed: page cache, image layers
    runs = [time_test(conn) for _ in range(max(3, repeats))]
    firsts = [f for f, _ in runs]
    totals = [t for _, t in runs]
    note = ", ".join(f"{f:.2f}/{t:.2f}" for f, t in runs)
    report.add(Result("`connector test` (docker): first rows, best", min(firsts), "s",
                      target="< 1.5 s", passed=min(firsts) < 1.5,
                      note=f"median {statistics.median(firsts):.2f} s; first/exit {note}"))
    report.add(Result("`connector test` (docker): exit, best", min(totals), "s",
                      note=f"median {statistics.median(totals):.2f} s"))
    for name, secs in breakdown(conn, repeats).items():
        report.add(Result(f"feedback: {name}", secs, "s"))
