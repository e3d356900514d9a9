"""Crash points: `CONNECTOR_CRASH_AT=<step>` ends the process at that step, as a power
cut or `kill -9` would (no cleanup, no `finally`). Tests use it to show that state and
table agree after a crash anywhere in a refresh's commit."""

from __future__ import annotations

import os

from worker.settings import settings

STEPS = ("fragment-written", "fragment-staged", "pending-recorded", "table-committed",
         "state-batch-applied", "state-applied")


def point(step: str) -> None:
    assert step in STEPS, step
    if settings().crash_at == step:
        os._exit(77)
