"""Limits too small for any container: Docker refuses to create or start the container
(`memory: 1k`: "Minimum memory limit allowed is 6MB"; `cpus: 0.001`: the cgroup's CPU
quota write fails), and the open failed as `infra`: the platform blamed, with the
engine's internals, and the queue retrying the tenant's own setting. validate refuses
them instead, naming the limit and the minimum."""

from __future__ import annotations

import pytest

from tests.conftest import ECHO_CODE


@pytest.mark.parametrize(("limits", "said"), [
    ("{memory: 1k}", "limits.memory: 1024 bytes is under the minimum of 16 MiB"),
    ("{memory: 6m}", "limits.memory: 6291456 bytes is under the minimum of 16 MiB"),
    ("{cpus: 0.001}", "limits.cpus: 0.001 is under the minimum of 0.01"),
])
def test_limits_no_container_can_run_with_are_refused_naming_the_minimum(
        connector, cli, limits, said) -> None:
    c = connector(ECHO_CODE, f"name: tiny\nlimits: {limits}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2, r.stdout
    assert said in " ".join(r.stderr.split()), r.stderr


def test_the_minimums_themselves_are_accepted(connector, cli) -> None:
    c = connector(ECHO_CODE, "name: tiny\nlimits: {memory: 16m, cpus: 0.01}\n")
    r = cli("validate", str(c))
    assert r.returncode == 0, r.stderr
