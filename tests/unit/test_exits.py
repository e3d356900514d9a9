"""How a runtime's end is named, the same for the process and Docker sandboxes."""

from __future__ import annotations

import pytest

from worker.models import FailureKind
from worker.sandbox.exits import classify_exit

MiB = 1 << 20


@pytest.mark.parametrize("what", ["sandbox process", "container"])
@pytest.mark.parametrize("stderr", [b"Traceback ...\nMemoryError\n",
                                    "terminate called after throwing 'std::bad_alloc'"])
def test_a_memory_error_on_stderr_is_out_of_memory_with_the_limit(what, stderr):
    assert classify_exit(what, 1, stderr, 256 * MiB) == ("out of memory (limit 256 MiB)",
                                                         FailureKind.LIMIT)


def test_the_oom_killer_is_out_of_memory_whatever_the_code():
    assert classify_exit("container", 137, b"", 512 * MiB, oom_killed=True) == (
        "out of memory (limit 512 MiB)", FailureKind.LIMIT)


def test_other_ends_are_the_users_with_the_last_line_of_stderr():
    assert classify_exit("sandbox process", -9, b"", MiB) == (
        "sandbox process killed by SIGKILL", FailureKind.USER)
    assert classify_exit("container", 3, b"starting\nValueError: nope\n", MiB) == (
        "container exited 3: ValueError: nope", FailureKind.USER)
