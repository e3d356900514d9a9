"""The in-process dispatcher: fragments run on a thread pool, each thread with a warm
sandbox session (the sandbox, not the thread, does the work, so threads are enough)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_pool(items: Iterable[T], task: Callable[[T], R], concurrency: int,
             on_done: Callable[[T, R | None, BaseException | None], bool]) -> None:
    """Run `task` over `items`, at most `concurrency` at once. `on_done` is called for
    each finished item; when it returns False no new item is started, and the call
    returns once the running ones finish (a failure stops the refresh, not mid-write)."""
    it = iter(items)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex:
        running: dict[Future[R], T] = {}

        def fill() -> None:
            while not stop.is_set() and len(running) < max(1, concurrency):
                item = next(it, None)
                if item is None:
                    return
                running[ex.submit(task, item)] = item

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                exc = fut.exception()
                if not on_done(item, None if exc else fut.result(), exc):
                    stop.set()
            fill()
