"""Polling until a condition holds, with a deadline that fails the test with a message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float,
               message: Callable[[], str] | str = "", interval: float = 0.05) -> T:
    """Call `condition` every `interval` s until it returns something truthy, and return
    that. After `timeout` s the test fails with `message` (a callable is called then, so
    worker logs are read only on failure). A `condition` may itself assert."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not within {timeout:g} s: {text}")
        time.sleep(interval)
    return result
