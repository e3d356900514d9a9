"""The shared backoff: doubling waits, capped, reset after a healthy run."""

from __future__ import annotations

from worker.backoff import Backoff


def test_delays_double_up_to_the_cap_and_start_over_on_reset():
    b = Backoff(first=1.0, cap=30.0)
    assert b.delay == 1.0
    assert [b.grow() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.reset() == 1.0 and b.delay == 1.0


def test_a_restart_after_a_long_run_waits_the_first_delay_after_a_short_one_longer():
    b = Backoff()
    assert b.after_run(lasted=5) == 2.0
    assert b.after_run(lasted=5) == 4.0
    assert b.after_run(lasted=61) == 1.0
