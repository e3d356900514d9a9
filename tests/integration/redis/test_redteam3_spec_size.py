"""connector.yaml is stored in Redis as the deployment record, uncompressed and outside
the tenant's bundle quota (which counts the compressed bundle): its size must be bounded,
also once YAML aliases are expanded, or a bundle of a few hundred KB puts hundreds of MB
into the store every tenant shares (and every worker parses it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ECHO_CODE, write_connector
from worker.registry import NotDeployed, get_deployment
from worker.spec import SpecError

pytestmark = pytest.mark.redis


def _deploy(redis_client, folder: Path) -> None:
    from worker.queue.client import TenantClient

    TenantClient(redis_client, "fat").deploy(folder)


def _assert_refused_and_absent(redis_client, folder: Path, name: str, words: str) -> None:
    with pytest.raises(SpecError) as e:
        _deploy(redis_client, folder)
    assert "connector.yaml" in str(e.value) and words in str(e.value), str(e.value)
    with pytest.raises(NotDeployed):
        get_deployment(redis_client, "fat", name)


def test_a_huge_value_in_connector_yaml_is_refused(redis_client, redis_prefix, tmp_path):
    big = "A" * (20 << 20)
    spec = (f"name: wide\ntenant: fat\nschema:\n  columns:\n"
            f"    - {{name: id, type: string, default: {big}}}\n")
    folder = write_connector(tmp_path / "wide", ECHO_CODE, spec)
    _assert_refused_and_absent(redis_client, folder, "wide", "bytes")


def test_aliases_that_repeat_a_long_string_are_refused(redis_client, redis_prefix, tmp_path):
    pin = "a" * (60 << 10)  # a valid requirement by the pin grammar
    spec = (f"name: repeat\ntenant: fat\nx: &p {pin}\n"
            f"packages: [{', '.join(['*p'] * 2000)}]\n")
    # `x` is not a field: use a column's format instead to carry the anchor
    spec = spec.replace(f"x: &p {pin}\n", "")
    spec = spec.replace("packages: [*p,", f"packages: [&p {pin},", 1)
    folder = write_connector(tmp_path / "repeat", ECHO_CODE, spec)
    assert (folder / "connector.yaml").stat().st_size < 200 << 10
    _assert_refused_and_absent(redis_client, folder, "repeat", "characters")
