"""`connector deploy` resolves the connector's pins as a build would (pip, for the image's
Python and platform, wheels only): a pin that cannot be resolved is refused at deploy,
naming the pin and pip's reason, instead of failing later on every worker.

pip reads its index from its own configuration: here an empty one (no index, a local
folder of wheels the test makes), so no resolution leaves the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE, write_connector
from tests.helpers.wheels import make_wheel

pytestmark = pytest.mark.redis


@pytest.fixture
def offline_pip(tmp_path: Path) -> dict[str, str]:
    """pip with no index: only the wheels in `wheels/` (one distribution, tinydist 1.0)."""
    make_wheel(tmp_path / "wheels", "tinydist", "")
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(tmp_path / "wheels"),
            "CONNECTOR_BUILD_CACHE": str(tmp_path / "build")}


@pytest.mark.parametrize(("pin", "reason"), [
    ("nonexistent-pkg==1.0", "No matching distribution found for nonexistent-pkg==1.0"),
    ("pyarrow==0.0.1", "No matching distribution found for pyarrow==0.0.1"),
    ("tinydist==2.0", "available versions of tinydist: 1.0"),
])
def test_deploy_refuses_a_pin_that_does_not_resolve(queue_env, tmp_path, offline_pip, pin,
                                                    reason):
    folder = write_connector(tmp_path / "c", ECHO_CODE,
                             f"name: pinned\ntenant: acme\npackages: ['{pin}']\n")
    r = queue_env.cli("deploy", str(folder), env=offline_pip)
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join(r.stderr.split())
    assert f"package '{pin}' could not be resolved" in said, said
    assert reason in said, said
    assert "nothing was deployed" in said, said
    r = queue_env.cli("status", "pinned", "--tenant", "acme")
    assert r.returncode == 2 and "no connector 'acme/pinned' is deployed" in r.stderr, r.stderr


def test_deploy_stores_a_connector_whose_pins_resolve(queue_env, tmp_path, offline_pip):
    folder = write_connector(tmp_path / "c", ECHO_CODE,
                             "name: pinned\ntenant: acme\npackages: ['tinydist==1.0']\n")
    r = queue_env.cli("deploy", str(folder), env=offline_pip)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deployed acme/pinned" in r.stdout
