"""Worker processes kept running: `connector worker --concurrency N`.

- `run_one`: one worker process. RQ's work loop can end on an error it did not expect
  (Redis gone at the wrong moment); a new loop starts once Redis answers, with a backoff
  that doubles while loops keep ending young. A stop signal or a drained burst ends it.
- `run_many`: N such processes (one job at a time each); signals are passed on to them.
  A process that dies unexpectedly (non-zero exit, not on a signal of ours) is replaced,
  with a backoff per slot that doubles while replacements keep dying young.

Both set up the project's `worker` logger, formatted like RQ's own lines, so one worker
log holds both.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from typing import Any

from rq.exceptions import StopRequested
from rq.logutils import setup_loghandlers

from worker.backoff import Backoff
from worker.bundle_legacy import account_stored_bundles
from worker.queue.conn import REDIS_DOWN, connect
from worker.queue.context import WorkerContext
from worker.queue.worker import ConnectorWorker

HEALTHY = 60.0  # seconds: a loop or process that ran this long resets its backoff
log = logging.getLogger(__name__)


def setup_logging(level: str) -> None:
    setup_loghandlers(level, name="worker")


def run_one(burst: bool, logging_level: str = "INFO") -> int:
    setup_logging(logging_level)
    r = connect()
    r.ping()  # an unreachable Redis at start is reported, not waited for
    ctx = WorkerContext.from_env(r)
    for note in account_stored_bundles(r):
        log.warning("worker: %s", note)
    if note := ctx.tenants.describe():
        log.warning(note)
    prune_image_store(ctx)
    backoff = Backoff()
    w: ConnectorWorker | None = None
    while True:
        started = time.monotonic()
        try:
            w = ConnectorWorker(r, ctx, burst=burst)
            w.work(logging_level=logging_level)
            if w.stopping or w.drained or w._stop_requested:
                return 0
            log.error("worker: the work loop ended unexpectedly")
        except StopRequested:
            return 0
        except REDIS_DOWN as e:
            log.error("worker: Redis unavailable (%s)", e)
        if w is not None and (w.stopping or w._stop_requested):
            return 0
        if time.monotonic() - started > HEALTHY:
            backoff.reset()
        log.error("worker: starting a new work loop in %.0f s", backoff.delay)
        try:
            time.sleep(backoff.delay)
        except StopRequested:  # SIGTERM, through the last loop's signal handler
            return 0
        if w is not None and w.stopping:
            return 0
        backoff.grow()


def prune_image_store(ctx: WorkerContext) -> None:
    """Bring this host's image store within its bounds before taking work: images left by
    earlier workers or versions (worker/images/store.py)."""
    if ctx.sandbox.name != "docker":
        return
    from worker.images.base import current_base_tag
    from worker.images.store import prune_images

    # this worker's base stays even before its first build names it
    result = prune_images(ctx.sandbox.client,  # type: ignore[attr-defined]
                          protect=[current_base_tag()])
    if result.removed or result.in_use:
        log.info("worker: image store: %d image(s) removed, %d in use kept",
                 len(result.removed), len(result.in_use))


def run_many(concurrency: int, burst: bool, logging_level: str = "INFO") -> int:
    if concurrency <= 1:
        return run_one(burst, logging_level)
    setup_logging(logging_level)
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "1",
           "--log-level", logging_level, *(["--burst"] if burst else [])]
    stopping = False
    slots: list[tuple[subprocess.Popen[bytes], float]] = [
        (subprocess.Popen(cmd), time.monotonic()) for _ in range(concurrency)]
    backoff = [Backoff() for _ in range(concurrency)]
    codes: list[int] = []

    def forward(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for c, _started in slots:
            with contextlib.suppress(ProcessLookupError):
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    live = set(range(concurrency))
    while live:
        time.sleep(0.2)
        for i in sorted(live):
            child, started = slots[i]
            code = child.poll()
            if code is None:
                continue
            if code == 0 or stopping:
                codes.append(code)
                live.discard(i)
                continue
            wait = backoff[i].after_run(time.monotonic() - started, HEALTHY)
            log.error("worker: process %d exited %d; starting another in %.0f s",
                      child.pid, code, wait)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not stopping:
                time.sleep(0.2)
            if stopping:
                codes.append(code)
                live.discard(i)
            else:
                slots[i] = (subprocess.Popen(cmd), time.monotonic())
    return max(codes, default=0)
