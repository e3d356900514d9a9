"""The StateStore contract, run against every implementation (SQLite and Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.models import Commit, RefreshRecord
from worker.state.base import StateStore
from worker.state.sqlite import SqliteState


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request, tmp_path: Path) -> Callable[[str], StateStore]:
    """make_store(connector) -> a store; same name, same data."""
    if request.param == "sqlite":
        return lambda name="c": SqliteState(tmp_path / f"{name}.sqlite")
    request.getfixturevalue("redis_prefix")
    r = request.getfixturevalue("redis_client")
    from worker.state.redis import RedisState

    return lambda name="c": RedisState(r, "acme", name)


def c(name: str, fp: str = "1", rows: int = 1) -> Commit:
    return Commit(name=name, fingerprint=fp, path=f"/d/{name}-{fp}.parquet", rows=rows)


def test_empty(make_store):
    s = make_store()
    assert s.committed() == {}
    assert s.refreshes() == []
    assert s.remove(["nope"]) == []


def test_commit_new_then_committed(make_store):
    s = make_store()
    assert s.commit(c("a")) is None
    assert s.commit(c("b/x.csv", rows=7)) is None
    assert s.committed() == {"a": c("a"), "b/x.csv": c("b/x.csv", rows=7)}


def test_commit_is_idempotent(make_store):
    s = make_store()
    assert s.commit(c("a")) is None
    assert s.commit(c("a")) is None  # a retried job: nothing to clean up
    assert s.committed() == {"a": c("a")}


def test_commit_new_version_returns_previous(make_store):
    s = make_store()
    s.commit(c("a", "1"))
    assert s.commit(c("a", "2", rows=5)) == c("a", "1")
    assert s.committed() == {"a": c("a", "2", rows=5)}
    assert s.commit(c("a", "2", rows=5)) is None
    assert s.fingerprints() == {"a": "2"}


def test_zero_row_commit_has_no_path(make_store):
    s = make_store()
    empty = Commit(name="e", fingerprint="1", path="", rows=0)
    assert s.commit(empty) is None
    assert s.committed()["e"] == empty


def test_remove_returns_what_was_removed(make_store):
    s = make_store()
    for n in "abc":
        s.commit(c(n))
    gone = s.remove(["a", "c", "missing"])
    assert sorted(g.name for g in gone) == ["a", "c"]
    assert set(s.committed()) == {"b"}
    assert s.fingerprints() == {"b": s.committed()["b"].fingerprint}
    assert s.remove(["a"]) == []


def test_stores_are_per_connector(make_store):
    one, two = make_store("one"), make_store("two")
    one.commit(c("a"))
    assert two.committed() == {}


def test_refresh_records_most_recent_first(make_store):
    s = make_store()
    for i in range(5):
        s.save_refresh(RefreshRecord(id=f"r{i}", started=1000.0 + i))
    r = RefreshRecord(id="r2", started=1002.0, finished=1003.0, status="ok")
    r.summary.read = 3
    s.save_refresh(r)  # an update replaces, it does not add
    recs = s.refreshes(limit=3)
    assert [x.id for x in recs] == ["r4", "r3", "r2"]
    assert recs[2].status == "ok" and recs[2].summary.read == 3
    assert len(s.refreshes(limit=10)) == 5


def test_concurrent_commits_of_distinct_fragments_all_land(make_store):
    s = make_store()

    def work(k: int) -> None:
        for i in range(50):
            s.commit(c(f"t{k}-{i}"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s.committed()) == 200


def test_commit_many_lands_every_version_once(make_store):
    s = make_store()
    s.commit(c("a", "1"))
    batch = [c("a", "2", rows=5), c("b"), Commit(name="e", fingerprint="1", path="", rows=0)]
    s.commit_many(batch)
    s.commit_many(batch)  # applied again after a crash: still one version each
    assert s.committed() == {x.name: x for x in batch}
    assert s.fingerprints() == {"a": "2", "b": "1", "e": "1"}


def test_staged_versions_read_whole_or_by_name(make_store):
    s = make_store()
    s.stage("r1", c("a", rows=3))
    s.stage("r1", Commit(name="e", fingerprint="1", path="", rows=0, rejected=2))
    s.stage("r1", c("a", "2", rows=4))  # staging again replaces
    s.stage("r2", c("z"))
    staged = s.staged("r1")
    assert sorted(staged.names) == ["a", "e"] and staged.rows == 4
    assert staged.get("a") == c("a", "2", rows=4)
    assert staged.get("e") == Commit(name="e", fingerprint="1", path="", rows=0, rejected=2)
    assert staged.get("z") is None
    assert [f.path for f in staged.files()] == [c("a", "2").path]
    some = s.staged("r1", ["e", "missing"])
    assert some.names == ["e"]
    assert len(s.staged("r1", [])) == 0 and len(s.staged("nothing")) == 0
    assert sorted(s.staged_refreshes()) == ["r1", "r2"]
