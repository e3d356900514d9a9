"""Refresh semantics on the in-memory sandbox: what is read, skipped, deleted and kept
when a read fails part-way, with the connector's functions run in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.models import FailureKind, FragmentFailure, RefreshSummary
from worker.refresh import refresh
from worker.sandbox.memory import MemorySandbox
from worker.sink import Output
from worker.spec import Connector, ConnectorSpec
from worker.state.sqlite import SqliteState
from worker.table.delta import DeltaDataset

CONNECTOR = Connector(path=Path("."), spec=ConnectorSpec(name="mem"), code="")


class Remote:
    """What the connector lists and reads: name -> (fingerprint, ids). An exception
    among the ids is raised when the read reaches it; every read_bytes call is logged."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, list[Any]]] = {}
        self.reads: list[str] = []
        self.contexts = 0

    def context(self, credentials: str) -> dict[str, str]:
        self.contexts += 1
        return {"credentials": credentials}

    def list_objects(self, context: Any, metadata: dict[str, Any]) -> Iterator[dict]:
        for name, (fp, _) in self.objects.items():
            yield {"name": name, "fingerprint": fp}

    def read_bytes(self, context: Any, metadata: dict[str, Any]) -> Iterator[dict]:
        name = metadata["name"]
        self.reads.append(name)
        for i in self.objects[name][1]:
            if isinstance(i, BaseException):
                raise i
            yield {"id": i, "frag": name}

    def sandbox(self) -> MemorySandbox:
        return MemorySandbox(self.list_objects, self.read_bytes, self.context)


class Dataset:
    """One connector's local output and state, refreshed in this process."""

    def __init__(self, root: Path) -> None:
        self.connector = CONNECTOR
        self.output = Output(str(root / "out"))
        self.state = SqliteState(root / "state.sqlite")

    def refresh(self, sandbox: MemorySandbox, concurrency: int = 2) -> RefreshSummary:
        return refresh(self.connector, sandbox, self.state, self.output, concurrency)

    def ids(self) -> list[int]:
        table = DeltaDataset.of(self.output, "default", "mem").read()
        return sorted(table.column("id").to_pylist()) if table is not None else []

    def files(self) -> list[str]:
        """The current table version's files."""
        table = DeltaDataset.of(self.output, "default", "mem").table()
        if table is None:
            return []
        return sorted(table.get_add_actions(flatten=True).column("path").to_pylist())

    def on_disk(self) -> list[str]:
        """Every Parquet file of the dataset, whichever version (if any) holds it."""
        root = Path(self.output.dataset_dir("default", "mem"))
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet")
                      if not p.relative_to(root).parts[0].startswith("_"))


@pytest.fixture
def remote() -> Remote:
    return Remote()


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return Dataset(tmp_path)


def counts(s: RefreshSummary) -> dict[str, int]:
    return s.model_dump(include={"listed", "read", "skipped", "recovered", "deleted", "failed",
                                 "rows"})


def test_new_and_changed_are_read_unchanged_skipped_unlisted_deleted(remote, dataset):
    remote.objects = {"a": ("1", [1, 2]), "b": ("1", [3])}
    s = dataset.refresh(remote.sandbox())
    assert counts(s) == {"listed": 2, "read": 2, "skipped": 0, "recovered": 0, "deleted": 0,
                         "failed": 0, "rows": 3}
    assert dataset.ids() == [1, 2, 3]

    s = dataset.refresh(remote.sandbox())  # unchanged: nothing read
    assert (s.read, s.skipped, s.failed) == (0, 2, 0)
    assert sorted(remote.reads) == ["a", "b"]

    remote.objects = {"b": ("2", [30, 31]), "c": ("1", [4])}  # b changes, c new, a gone
    s = dataset.refresh(remote.sandbox())
    assert counts(s) == {"listed": 2, "read": 2, "skipped": 0, "recovered": 0, "deleted": 1,
                         "failed": 0, "rows": 3}
    assert dataset.ids() == [4, 30, 31]
    assert sorted(remote.reads) == ["a", "b", "b", "c"]
    assert len(dataset.files()) == 2  # a's file and b's old version are gone


def test_a_read_failing_midway_commits_nothing_of_it_and_the_next_refresh_finishes(
        remote, dataset):
    remote.objects = {f"f{i}": ("1", [i]) for i in range(6)}
    remote.objects["f3"] = ("1", [3, RuntimeError("remote said no")])  # one row, then fails
    s = dataset.refresh(remote.sandbox(), concurrency=1)
    assert (s.read, s.failed, s.rows) == (3, 1, 3)
    (failure,) = s.failures
    assert failure.name == "f3" and failure.kind == FailureKind.USER
    assert failure.message == "read_bytes('f3') raised RuntimeError: remote said no"
    assert remote.reads == ["f0", "f1", "f2", "f3"]  # no new fragment starts after a failure
    assert dataset.ids() == [0, 1, 2]  # f3's first row was not committed
    assert len(dataset.files()) == 3
    assert dataset.on_disk() == dataset.files()  # nor left behind as a file

    remote.objects["f3"] = ("1", [3])
    s = dataset.refresh(remote.sandbox(), concurrency=1)
    assert counts(s) == {"listed": 6, "read": 3, "skipped": 3, "recovered": 0, "deleted": 0,
                         "failed": 0, "rows": 3}
    assert dataset.ids() == [0, 1, 2, 3, 4, 5]  # every row exactly once
    assert sorted(remote.reads) == ["f0", "f1", "f2", "f3", "f3", "f4", "f5"]


def test_a_failed_listing_keeps_what_was_committed(remote, dataset):
    remote.objects = {"a": ("1", [1])}
    dataset.refresh(remote.sandbox())

    def broken(context: Any, metadata: dict[str, Any]) -> Iterator[dict]:
        raise ConnectionError("remote unreachable")

    s = dataset.refresh(MemorySandbox(broken, remote.read_bytes))
    assert (s.failed, s.deleted) == (1, 0)
    assert (s.failures[0].step, s.failures[0].name) == ("listing", "")
    assert "list_objects({}) raised ConnectionError: remote unreachable" in s.failures[0].message
    assert dataset.ids() == [1]


def test_sessions_are_warm_context_runs_once_per_session_and_all_are_closed(remote,
                                                                            dataset):
    remote.objects = {f"f{i}": ("1", [i]) for i in range(8)}
    box = remote.sandbox()
    s = dataset.refresh(box, concurrency=1)
    assert s.read == 8
    assert len(box.sessions) == 1 == remote.contexts  # the listing's session read them all
    assert all(x.closed for x in box.sessions)


def test_an_infra_failure_retires_the_session_and_the_next_refresh_opens_a_new_one(
        remote, dataset):
    remote.objects = {"a": ("1", [1]), "b": ("1", [FragmentFailure("engine gone",
                                                                    FailureKind.INFRA)])}
    box = remote.sandbox()
    s = dataset.refresh(box, concurrency=1)
    assert s.failures[0].kind == FailureKind.INFRA and s.failures[0].message == "engine gone"
    assert not box.sessions[0].usable

    remote.objects["b"] = ("1", [2])
    s = dataset.refresh(box, concurrency=1)
    assert (s.read, s.skipped, s.failed) == (1, 1, 0)
    assert len(box.sessions) == 2 and dataset.ids() == [1, 2]


def test_prefixes_are_expanded_to_any_depth():
    tree = {"": ["2026/"], "2026/": ["2026/01/", "2026/x"], "2026/01/": ["2026/01/y"]}

    def list_objects(context: Any, metadata: dict[str, Any]) -> Iterator[dict]:
        for name in tree[metadata.get("name", "")]:
            yield {"name": name, "fingerprint": "1", "is_prefix": name.endswith("/")}

    session = MemorySandbox(list_objects, lambda c, m: iter(())).open(CONNECTOR, None)
    assert [f.name for f in session.list()] == ["2026/01/y", "2026/x"]


def test_a_failing_context_fails_the_open_as_a_user_error():
    def context(credentials: str) -> None:
        raise PermissionError("bad token")

    box = MemorySandbox(lambda c, m: iter(()), lambda c, m: iter(()), context)
    with pytest.raises(FragmentFailure, match=r"context\(\) raised PermissionError: bad "):
        box.open(CONNECTOR, "x")
