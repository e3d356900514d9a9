"""Shared bench plumbing: results, timers, connector folders, a timing sandbox wrapper,
and psutil-free memory readings from /proc and the container's cgroup."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.models import Fragment, Progress, RefreshSummary
from worker.refresh import refresh
from worker.sandbox.base import Sandbox, Session
from worker.sink import Output
from worker.spec import Connector, load_connector
from worker.state.sqlite import SqliteState


@dataclass
class Result:
    """One reported figure. `ratio` is figure/baseline (or baseline/figure for bounds)."""

    name: str
    figure: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.figure / self.baseline  # type: ignore[operator]


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, r: Result) -> Result:
        self.results.append(r)
        verdict = "" if r.passed is None else ("PASS" if r.passed else "FAIL")
        ratio = f"  ratio {r.ratio:.2f}x" if r.ratio is not None else ""
        base = (f"  baseline {fmt(r.baseline)} {r.unit} ({r.baseline_name})"
                if r.baseline is not None else "")
        target = f"  target {r.target}" if r.target else ""
        print(f"  {r.name}: {fmt(r.figure)} {r.unit}{base}{ratio}{target}  {verdict}"
              + (f"  [{r.note}]" if r.note else ""), flush=True)
        return r

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  - {text}", flush=True)

    def table(self) -> str:
        lines = ["| figure | value | baseline | ratio | target | result |",
                 "|---|---|---|---|---|---|"]
        for r in self.results:
            base = f"{fmt(r.baseline)} ({r.baseline_name})" if r.baseline is not None else ""
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
            verdict = "" if r.passed is None else ("pass" if r.passed else "**fail**")
            lines.append(f"| {r.name} | {fmt(r.figure)} {r.unit} | {base} | {ratio} | "
                         f"{r.target} | {verdict} |")
        return "\n".join(lines)


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


@contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then t[0] is the elapsed seconds."""
    out = [0.0]
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out[0] = time.perf_counter() - t0


def best_of(n: int, fn: Callable[[], float]) -> float:
    """The smallest of n timings: on a noisy 2-core box the minimum is the most stable."""
    return min(fn() for _ in range(max(1, n)))


# --------------------------------------------------------------------------- folders


class Workdir:
    """A temp dir for connector folders and outputs, removed at exit unless kept."""

    def __init__(self, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="connector-bench-"))
        self.keep = keep

    def connector(self, name: str, code: str, spec: str,
                  files: dict[str, bytes] | None = None) -> Connector:
        folder = self.path / "connectors" / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / "connector.py").write_text(textwrap.dedent(code))
        (folder / "connector.yaml").write_text(textwrap.dedent(spec))
        for fname, data in (files or {}).items():
            (folder / fname).write_bytes(data)
        return load_connector(folder)

    def fresh_output(self, name: str) -> Path:
        out = self.path / "out" / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        return out

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- sandboxes


class TimedSandbox:
    """Wraps a sandbox and records how long each session took to open (cold start)."""

    def __init__(self, inner: Sandbox) -> None:
        self.inner = inner
        self.name = inner.name
        self.opens: list[float] = []

    def open(self, connector: Connector, credentials: str | None) -> Session:
        t0 = time.perf_counter()
        s = self.inner.open(connector, credentials)
        self.opens.append(time.perf_counter() - t0)
        return s


def make_sandbox(kind: str) -> Sandbox:
    if kind == "process":
        from worker.sandbox.process import ProcessSandbox

        return ProcessSandbox()
    from worker.sandbox.docker import DockerSandbox

    return DockerSandbox()


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


def runnable(report: Report, sandboxes: list[str]) -> Iterator[str]:
    """The requested sandbox kinds this machine can run; a missing engine is noted."""
    for kind in sandboxes:
        if kind == "docker" and not docker_available():
            report.note("docker: no engine answers; skipped")
            continue
        yield kind


def warm_box(kind: str, connector: Connector) -> TimedSandbox:
    """A timed sandbox whose connector image (Docker) is already built."""
    box = TimedSandbox(make_sandbox(kind))
    if kind == "docker":
        box.inner.image_for(connector)  # type: ignore[attr-defined]
    return box


@dataclass
class RefreshTiming:
    summary: RefreshSummary
    total: float  # the whole refresh() call
    until_read: float  # refresh start -> first on_progress("read", 0, n): list + diff
    read_phase: float  # first on_progress("read", ...) -> refresh returned
    opens: list[float]


def timed_refresh(connector: Connector, sandbox: TimedSandbox, out: Path,
                  concurrency: int, state_path: Path | None = None,
                  credentials: str | None = None) -> RefreshTiming:
    """worker.refresh.refresh with SqliteState + Output, timing its phases."""
    state = SqliteState(state_path or out / "state.sqlite")
    output = Output(str(out))
    marks: list[float] = []

    def progress(_: Progress) -> None:
        if not marks:
            marks.append(time.perf_counter())

    sandbox.opens.clear()
    t0 = time.perf_counter()
    summary = refresh(connector, sandbox, state, output, concurrency, progress, credentials)
    t1 = time.perf_counter()
    first = marks[0] if marks else t1
    if summary.failed:
        raise RuntimeError(f"bench refresh failed: {summary.failures[0].message}\n"
                           f"{summary.failures[0].traceback}")
    return RefreshTiming(summary, t1 - t0, first - t0, t1 - first, list(sandbox.opens))


def warm_listing(sandbox: Sandbox, connector: Connector) -> tuple[Session, list[Fragment]]:
    s = sandbox.open(connector, None)
    return s, list(s.list())


# --------------------------------------------------------------------------- memory


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from /proc/<pid>/status."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class Sampler:
    """Samples a reading every `period` seconds in a thread; keeps the maximum."""

    def __init__(self, read: Callable[[], int | None], period: float = 0.05) -> None:
        self._read, self._period = read, period
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = self._read()
            except (OSError, ValueError):
                v = None
            if v is not None:
                self.peak = max(self.peak, v)
                self.samples += 1
            self._stop.wait(self._period)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def container_cgroup_dir(container_id: str) -> Path | None:
    """The container's memory cgroup: v1 (memory/docker/<id>) or v2 (system.slice/...)."""
    candidates = [
        Path("/sys/fs/cgroup/memory/docker") / container_id,
        Path("/sys/fs/cgroup/docker") / container_id,
        Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def cgroup_peak(d: Path) -> tuple[int, str]:
    """(peak bytes, which file) — cgroup v2 memory.peak or v1 memory.max_usage_in_bytes."""
    for fname in ("memory.peak", "memory.max_usage_in_bytes"):
        p = d / fname
        if p.exists():
            return int(p.read_text().split()[0]), fname
    raise FileNotFoundError(f"no memory peak file under {d}")


def cgroup_stat(d: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    p = d / "memory.stat"
    if p.exists():
        for line in p.read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.isdigit():
                out[k] = int(v)
    return out


def mib(n: float) -> float:
    return n / (1 << 20)


def cpu_info() -> str:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}"


# --------------------------------------------------------------------------- CPU


_TICK = os.sysconf("SC_CLK_TCK")


class UserProcessCpu:
    """CPU seconds of the user processes (worker/runtime/shim.py) under one process.

    The process sandbox's session is SIGKILLed at close, so the user process is never
    waited for and its CPU (for a custom parser: the user's parser itself) never reaches
    RUSAGE_CHILDREN. A thread reads each one's utime + stime from /proc every 20 ms; only
    processes descended from `root` count (other runs on the box have shims too). The
    last < 20 ms of each is missed: a constant per session, which a slope cancels."""

    def __init__(self, root: int) -> None:
        self._root = root
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shim-cpu", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self._seen.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in os.listdir("/proc"):
                if name.isdigit():
                    self._sample(int(name))
            self._stop.wait(0.02)

    def _sample(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"worker/runtime/shim.py" not in f.read():
                    return
            fields = _stat(pid)
            ppid, depth = int(fields[1]), 0
            while ppid not in (self._root, 0, 1) and depth < 4:
                ppid, depth = int(_stat(ppid)[1]), depth + 1
        except (OSError, ValueError, IndexError):
            return
        if ppid == self._root:
            self._seen[pid] = (int(fields[11]) + int(fields[12])) / _TICK


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...] (utime is [11])."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
