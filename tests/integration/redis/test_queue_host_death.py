"""A queue worker SIGKILLed while a connector's code runs in the process sandbox: the
runtime and every process the code started end with it, and the job, once a dead
worker has taken its last attempt too, fails with a reason (real Redis, real workers)."""

from __future__ import annotations

import pytest

from tests.conftest import write_connector
from tests.helpers.lingering import (
    SPEC,
    assert_all_end,
    cmdline,
    kill_all,
    lingering_code,
    marked,
)
from tests.helpers.lingering import runtime_pid as runtime_of
from tests.helpers.timing import LEASES, fast
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.redis

# one retry, a second after the first attempt's worker is found dead
FAST = fast(LEASES, {"CONNECTOR_RETRY_INTERVALS": "1"})
ESCAPEES = {"child", "session", "daemon", "popen"}


def test_a_killed_worker_leaves_no_connector_code_running_and_its_job_fails_with_why(
        queue_env, tmp_path, redis_client):
    from worker.state.redis import RedisState

    marks = tmp_path / "marks"
    marks.mkdir()
    folder = write_connector(tmp_path / "linger", lingering_code(marks, "read", escape=True),
                             SPEC.format(name="linger", extra="tenant: tq\n"))
    queue_env.deploy(folder)
    r = queue_env.cli("refresh", "linger", "--tenant", "tq", "--queue", env=FAST)
    assert r.returncode == 0, r.stderr
    seen: list[int] = []
    try:
        for attempt in (1, 2):  # the first attempt and its one retry
            for f in marks.iterdir():
                f.unlink()
            worker = queue_env.start_workers(1, env=FAST)

            def lingering() -> dict[str, int] | None:
                found = marked(marks)
                tags = {name.rsplit("-", 1)[0] for name in found}
                return found if tags >= {"user"} | ESCAPEES else None

            procs = wait_until(lingering, 90, queue_env.logs, interval=0.1)
            procs["runtime"] = runtime_of(marks)
            seen += procs.values()
            assert "worker.runtime" in cmdline(procs["runtime"])
            queue_env.kill(worker)  # the worker's whole process group, SIGKILL
            assert_all_end(procs, f"the worker died (attempt {attempt})")
    finally:
        kill_all(seen)

    # A live worker's reaper finds the second attempt abandoned, with no retry left.
    queue_env.start_workers(1, env=FAST)
    state = RedisState(redis_client, "tq", "linger")
    done = wait_until(lambda: [x for x in state.refreshes() if x.status != "running"],
                      120, queue_env.logs, interval=0.2)
    summary = done[0].summary
    assert summary.failed == 1 and summary.read == 0, done[0]
    failure = summary.failures[0]
    assert failure.name == "one" and failure.kind == "infra", failure
    assert "its worker died while running it" in failure.message, failure
