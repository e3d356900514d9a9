"""Waits that double while something keeps failing, up to a cap.

Three loops use it in queue mode: waiting for Redis to answer again, starting a new work
loop after the last one ended on an error, and replacing a worker process that died.
Each keeps one `Backoff`: `delay` is the wait to use now, `grow()` doubles it after
another failure, `reset()` starts over once things went well for a while.
"""

from __future__ import annotations

MAX_BACKOFF = 30.0  # seconds: the longest wait between two tries


class Backoff:
    def __init__(self, first: float = 1.0, cap: float = MAX_BACKOFF) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def grow(self) -> float:
        """Double the delay (up to the cap) and return it."""
        self.delay = min(self.delay * 2, self.cap)
        return self.delay

    def reset(self) -> float:
        self.delay = self.first
        return self.delay

    def after_run(self, lasted: float, healthy: float = 60.0) -> float:
        """The delay before restarting something that ran `lasted` seconds and failed:
        back to the first delay if it ran for `healthy` seconds or more, else doubled."""
        return self.reset() if lasted > healthy else self.grow()
