"""Queue mode for targets 1 and 3: real worker processes against a real Redis.

`QueueBench` owns everything it uses and leaves nothing behind:
- a dedicated Redis database (`BENCH_REDIS_URL`, default db 9 of `REDIS_URL`'s server)
  and key prefixes of its own (ours and RQ's), deleted at the end;
- a bench tenant (`bench<tag>`), so its containers can be told from anyone else's;
- output, bundle cache and worker logs in the bench's temp dir;
- worker processes (`python -m worker.cli worker --concurrency N`, in their own process
  group), stopped with SIGTERM at the end of each measurement; a process group that
  does not empty within 30 s is killed and reported.

A figure is measured from just before the refresh is enqueued (`start_refresh`) until
the finalize job closed the refresh record (`record.finished`, the worker's clock on
the same host): list job, read jobs, finalize and every queue hop in between. Before
timing, one untimed refresh of the same connector warms the workers: Docker image
built, bundle unpacked, a warm session (context() done) in each worker process. Between
runs the connector's committed state and files are dropped, so every timed refresh
reads every fragment again through the same warm sessions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.common import Report, Workdir, docker_available
from worker.models import RefreshSummary
from worker.spec import Connector

ROOT = Path(__file__).resolve().parents[1]
STOP_WAIT = 30.0


def bench_redis_url() -> str:
    """BENCH_REDIS_URL, else database 9 on the server of REDIS_URL (or the default)."""
    if "BENCH_REDIS_URL" in os.environ:
        return os.environ["BENCH_REDIS_URL"]
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")
    head, _, tail = base.rpartition("/")
    return f"{head}/9" if tail.isdigit() and head.count("/") >= 2 else base


class QueueUnavailable(RuntimeError):
    pass


class QueueBench:
    def __init__(self, work: Workdir) -> None:
        tag = uuid.uuid4().hex[:8]
        self.url = bench_redis_url()
        self.tenant = f"bench{tag}"
        self.prefix = f"cxbench{tag}"
        self.root = work.path / f"queue-{tag}"
        self.output = self.root / "out"
        self.output.mkdir(parents=True)
        # RQ reads RQ_KEY_PREFIX once, at import: set it before rq is first imported;
        # if something imported rq already, the workers are told its prefix instead.
        if "rq" not in sys.modules:
            os.environ.setdefault("RQ_KEY_PREFIX", f"rqbench{tag}")
        import rq.defaults

        self.rq_prefix = rq.defaults.RQ_KEY_PREFIX
        self._saved = {k: os.environ.get(k) for k in ("CONNECTOR_REDIS_PREFIX", "REDIS_URL")}
        os.environ["CONNECTOR_REDIS_PREFIX"] = self.prefix  # read by worker.settings
        os.environ["REDIS_URL"] = self.url
        from worker.settings import settings

        settings.cache_clear()  # the in-process client reads the prefix from settings
        from worker.queue.conn import connect

        self.redis = connect(self.url)
        try:
            self.redis.ping()
        except Exception as e:  # noqa: BLE001 - any failure: no queue figures
            self._restore_env()
            raise QueueUnavailable(f"no Redis at {self.url} ({e}); "
                                   "start one with scripts/start-redis.sh 6390") from None
        self.env = {**os.environ, "REDIS_URL": self.url,
                    "CONNECTOR_REDIS_PREFIX": self.prefix, "RQ_KEY_PREFIX": self.rq_prefix,
                    "CONNECTOR_OUTPUT": str(self.output),
                    "CONNECTOR_BUNDLE_CACHE": str(self.root / "cache" / "bundles"),
                    "PYTHONPATH": os.pathsep.join(
                        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.leftovers: list[str] = []

    # --- connectors --------------------------------------------------------------------

    def deploy(self, connector: Connector) -> str:
        """Deploys a copy of the folder under the bench tenant; returns the name."""
        from worker.queue.client import TenantClient

        folder = self.root / "connectors" / connector.spec.name
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(connector.path, folder)
        spec = (folder / "connector.yaml").read_text()
        (folder / "connector.yaml").write_text(f"tenant: {self.tenant}\n{spec}")
        TenantClient(self.redis, self.tenant).deploy(folder)
        return connector.spec.name

    def reset(self, name: str) -> None:
        """Forget what the connector committed (state and files): the next refresh reads
        every fragment again."""
        from worker.state.keys import ConnectorKeys

        k = ConnectorKeys(self.tenant, name)
        self.redis.delete(k.fragments, k.fingerprints)
        shutil.rmtree(self.output / self.tenant / name, ignore_errors=True)

    def refresh(self, name: str, timeout: float = 900) -> tuple[float, RefreshSummary]:
        """(seconds from enqueue to the refresh record closed, its summary)."""
        from worker.queue.client import TenantClient

        client = TenantClient(self.redis, self.tenant)
        t0 = time.time()
        handle = client.refresh(name)
        if handle.joined:
            raise RuntimeError(f"bench: a refresh of {name} was already running")
        record = client.wait(name, handle.id, poll=0.02, timeout=timeout)
        if record.status != "ok" or record.finished is None:
            f = record.summary.failures
            raise RuntimeError(f"bench queued refresh {record.status}: "
                               + (f"{f[0].message}\n{f[0].traceback}" if f else "no failure"))
        return record.finished - t0, record.summary

    # --- workers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def workers(self, sandbox: str, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
        log = self.root / f"workers-{sandbox}-{int(time.time() * 1000)}.log"
        env = {**self.env, "CONNECTOR_SANDBOX": sandbox}
        with log.open("wb") as f:
            p = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker",
                                  "--concurrency", str(concurrency), "--log-level", "WARNING"],
                                 cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            yield p
        except BaseException:
            print(f"  worker log ({log}):\n{log.read_text()[-3000:]}", flush=True)
            raise
        finally:
            self._stop(p, log)

    def _stop(self, p: subprocess.Popen[bytes], log: Path) -> None:
        """SIGTERM to the supervisor (it passes it on to its worker processes), then
        wait for the whole process group to be gone."""
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.leftovers.append(f"supervisor {p.pid} ignored SIGTERM for {STOP_WAIT:.0f} s")
        deadline = time.monotonic() + STOP_WAIT
        while time.monotonic() < deadline:
            try:
                os.killpg(p.pid, 0)  # the group still has members
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            self.leftovers.append(f"process group {p.pid} killed after SIGTERM + "
                                  f"{STOP_WAIT:.0f} s (log {log})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def containers_left(self) -> int:
        """This tenant's sandbox containers still present (should be 0 after a stop)."""
        try:
            import docker

            api = docker.from_env(timeout=10).api
            return len(api.containers(all=True, filters={
                "label": f"io.connector.tenant={self.tenant}"}))
        except Exception:  # noqa: BLE001 - no engine: nothing can be left
            return 0

    # --- cleanup -----------------------------------------------------------------------

    def _restore_env(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from worker.settings import settings

        settings.cache_clear()

    def close(self) -> None:
        try:
            for pattern in (f"{self.prefix}*", f"{self.rq_prefix}:*"):
                names = list(self.redis.scan_iter(match=pattern, count=1000))
                for i in range(0, len(names), 500):
                    self.redis.delete(*names[i:i + 500])
            self.redis.close()
        finally:
            self._restore_env()

    def __enter__(self) -> QueueBench:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def measure(qb: QueueBench, connector: Connector, sandbox: str, concurrency: int,
            repeats: int, expect_read: int, expect_rows: int) -> dict[str, Any]:
    """Deploy, start workers, warm them with one untimed refresh, then best of
    `repeats` timed refreshes (state reset before each). Returns seconds and more."""
    name = qb.deploy(connector)
    times: list[float] = []
    with qb.workers(sandbox, concurrency):
        qb.reset(name)
        warm_s, s = qb.refresh(name)
        assert s.read == expect_read and s.rows == expect_rows, s
        for _ in range(max(1, repeats)):
            qb.reset(name)
            secs, s = qb.refresh(name)
            assert s.read == expect_read and s.rows == expect_rows and not s.failed, s
            times.append(secs)
    left = qb.containers_left()
    if left:
        qb.leftovers.append(f"{left} container(s) of tenant {qb.tenant} left after stop")
    return {"best": min(times), "times": times, "warmup": warm_s}


def open_bench(report: Report, work: Workdir, workers: int) -> QueueBench | None:
    """A QueueBench, or None (noted in the report) when queue mode is off or has no Redis."""
    if workers <= 0:
        return None
    try:
        return QueueBench(work)
    except QueueUnavailable as e:
        report.note(f"queue mode: skipped, {e}")
        return None


def queue_kinds(sandboxes: list[str]) -> list[str]:
    """Docker first (the production figure), process second; docker only with an engine."""
    return [k for k in sorted(sandboxes, key=lambda k: k != "docker")
            if k != "docker" or docker_available()]
