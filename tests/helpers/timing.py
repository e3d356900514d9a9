"""Environment for queue-mode workers that react in seconds, not tens of seconds.

The product's defaults suit production (retries after 5, 15, 30 s; the reaper every 5 s;
a dead worker's job found after 20 s). A test picks the parts it relies on; `fast()`
always includes the reaper, since abandoned, scheduled and stuck work all wait for it.
"""

from __future__ import annotations

REAPER = {"CONNECTOR_REAP_EVERY": "1"}
RETRIES = {"CONNECTOR_RETRY_INTERVALS": "1,2,4"}
# A running job's started-registry entry is renewed every second and lapses after 5 s.
LEASES = {"CONNECTOR_HEARTBEAT": "1", "CONNECTOR_STARTED_TTL": "5"}
WATCHDOG = {"CONNECTOR_WATCH_EVERY": "1", "CONNECTOR_STUCK_AFTER": "2"}


def fast(*parts: dict[str, str]) -> dict[str, str]:
    env = dict(REAPER)
    for part in parts:
        env.update(part)
    return env
