"""The host side of the protocol against frames a hostile sandbox could write.

User code can write to the protocol's file descriptor, so a session must survive any
byte sequence: every outcome is a result or a `FragmentFailure` of the user's (never a
host traceback, never `infra`, which would make the platform retry the user's fault).
A scripted channel plays the sandbox; Hypothesis generates the frame sequences.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_connector
from worker.models import FailureKind, Fragment, FragmentFailure
from worker.protocol import HEADER, LISTING_SCHEMA, encode_batch, encode_json, listing_batch
from worker.sandbox.session import LOG_FRAME_CAP, FramedSession
from worker.spec import Connector, load_connector


class ScriptedSource:
    """The runtime's stdout, replaying fixed bytes; EOF after them."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        if self._pos + n > len(self._data):
            self._pos = len(self._data)
            raise EOFError
        out = bytes(self._data[self._pos:self._pos + n])
        self._pos += n
        return out


class ScriptedChannel:
    fence = None  # no network

    def __init__(self, data: bytes) -> None:
        self.source = ScriptedSource(data)
        self.sent: list[bytes] = []
        self.killed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def kill(self) -> None:
        self.killed = True

    def exit_reason(self) -> tuple[str, FailureKind]:
        return "sandbox process exited 1", FailureKind.USER


def _idle(folder: Path, spec: str) -> Connector:
    """A connector whose code is never run: the scripted channel plays the sandbox."""
    return load_connector(write_connector(folder, """
        def list_objects(context, metadata):
            return []
        def read_bytes(context, metadata):
            return []
        """, spec))


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Connector:
    return _idle(tmp_path_factory.mktemp("frames") / "c",
                 "name: frames\nlimits: {max_output_bytes: 1m}\n")


def raw(kind: bytes, body: bytes) -> bytes:
    return HEADER.pack(kind, len(body)) + body


READY = encode_json({"op": "ready"})
LISTED = encode_json({"op": "done", "count": 1})
DONE = encode_json({"op": "done", "rows": 1, "rejected": 0, "warnings": []})


def one_listing() -> bytes:
    return encode_batch(listing_batch([{"name": "a", "fingerprint": "1"}]))


def session(conn: Connector, data: bytes) -> FramedSession:
    return FramedSession(ScriptedChannel(data), conn, str(conn.path))


def user_failure(fn, *args) -> FragmentFailure:  # noqa: ANN001
    with pytest.raises(FragmentFailure) as e:
        fn(*args)
    assert e.value.kind != FailureKind.INFRA, e.value.message
    return e.value


def read_all(s: FramedSession) -> list[pa.RecordBatch]:
    return list(s.read(Fragment(name="a", fingerprint="1")))


# --------------------------------------------------------------- named attacks


def test_arrow_frame_during_open_is_a_protocol_failure(conn):
    e = user_failure(session(conn, one_listing()).start, None)
    assert e.kind == FailureKind.USER
    assert "protocol" in e.message and "Arrow" in e.message


@pytest.mark.parametrize("body", [b"[1,2]", b"42", b'"ready"', b"null", b"{", b"\xff\xfe",
                                  b"[" * 100000, b'{"op": "ready", "x": 1}',
                                  b'{"op": "done", "count": 1e400}'])
def test_malformed_control_frames_during_open(conn, body):
    e = user_failure(session(conn, raw(b"J", body)).start, None)
    assert e.kind == FailureKind.USER and "protocol" in e.message, e.message


def test_garbage_arrow_frame_during_listing(conn):
    e = user_failure(session(conn, raw(b"A", b"\xff\xff\xff\xff" + b"garbage" * 10)).list)
    assert e.kind == FailureKind.USER
    assert "Arrow frame is not a valid record batch" in e.message, e.message


def test_listing_batch_of_another_shape_is_refused(conn):
    batch = pa.record_batch([pa.array([1, 2])], names=["name"])
    e = user_failure(session(conn, encode_batch(batch) + LISTED).list)
    assert "listing" in e.message, e.message


def test_forged_infra_error_is_the_users_failure(conn):
    forged = encode_json({"op": "error", "kind": "infra", "message": "engine on fire",
                          "traceback": ""})
    s = session(conn, forged)
    e = user_failure(read_all, s)
    assert e.kind == FailureKind.USER
    assert "engine on fire" in e.message
    assert not s.usable


@pytest.mark.parametrize("kind", ["user", "data", "limit"])
def test_error_kinds_the_sandbox_may_claim(conn, kind):
    frame = encode_json({"op": "error", "kind": kind, "message": "nope", "traceback": ""})
    assert user_failure(read_all, session(conn, frame)).kind == FailureKind(kind)


def test_listing_frame_over_the_cap_is_a_clear_limit_failure(conn):
    # The header alone announces it: the body is never sent (nor buffered).
    head = HEADER.pack(b"A", (64 << 20) + 1)
    e = user_failure(session(conn, head).list)
    assert e.kind == FailureKind.LIMIT
    assert e.message.startswith("listing exceeded"), e.message


def test_compressed_arrow_frame_is_refused_before_decoding(conn):
    batch = pa.record_batch([pa.array(["x" * 1000] * 1000)], names=["v"])
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, batch.schema, options=opts) as w:
        w.write_batch(batch)
    e = user_failure(read_all, session(conn, raw(b"A", sink.getvalue().to_pybytes()) + DONE))
    assert "compressed" in e.message, e.message


def test_done_with_negative_rows_is_refused(conn):
    bad = encode_json({"op": "done", "rows": -5})
    e = user_failure(read_all, session(conn, bad))
    assert "protocol" in e.message


def test_well_formed_exchange_still_works(conn):
    s = session(conn, READY + one_listing() + LISTED
                + encode_batch(pa.record_batch([pa.array([1])], names=["x"])) + DONE)
    s.start(None)
    assert [f.name for f in s.list()] == ["a"]
    [batch] = read_all(s)
    assert batch.column(0).to_pylist() == [1]
    assert s.usable


# --------------------------------------------------------------- fuzzing

def _arrow_bodies() -> st.SearchStrategy[bytes]:
    good = [encode_batch(listing_batch([{"name": "a", "fingerprint": "1"}]))[5:],
            encode_batch(pa.record_batch([pa.array([1, None])], names=["x"]))[5:],
            encode_batch(pa.record_batch([pa.array(["s"]).dictionary_encode()],
                                         names=["d"]))[5:]]

    def mutate(body: bytes, at: int, byte: int) -> bytes:
        at %= len(body)
        return body[:at] + bytes([byte]) + body[at + 1:]

    return st.one_of(
        st.sampled_from(good),
        st.builds(mutate, st.sampled_from(good), st.integers(0, 10000), st.integers(0, 255)),
        st.builds(lambda b, n: b[:n], st.sampled_from(good), st.integers(0, 400)),
        st.binary(max_size=64),
    )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8)


def _control_objects() -> st.SearchStrategy[object]:
    ops = st.sampled_from(["ready", "done", "log", "error", "listed", "read", "", None, 7])
    fields = st.fixed_dictionaries(
        {"op": ops},
        optional={"count": _json_values | st.integers(-2, 5),
                  "rows": _json_values | st.integers(-2, 5),
                  "rejected": st.integers(-1, 3), "warnings": _json_values,
                  "text": _json_values | st.text(), "message": _json_values | st.text(),
                  "kind": st.sampled_from(["user", "data", "limit", "infra", "x"]) | _json_values,
                  "traceback": _json_values})
    return fields | _json_values


def _frames() -> st.SearchStrategy[bytes]:
    control = _control_objects().map(lambda o: raw(b"J", json.dumps(o).encode()))
    arrow = _arrow_bodies().map(lambda b: raw(b"A", b))
    junk_header = st.builds(lambda k, n, body: struct.pack(">cI", k, n) + body,
                            st.binary(min_size=1, max_size=1), st.integers(0, 2**32 - 1),
                            st.binary(max_size=16))
    return st.one_of(control, control, arrow, arrow, junk_header,
                     st.sampled_from([READY, LISTED, DONE, one_listing()]))


@settings(max_examples=3000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_frames(), max_size=6), st.sampled_from(["open", "list", "read", "all"]))
def test_fuzzed_frame_sequences_never_crash_the_host(conn, frames, phase):
    s = session(conn, b"".join(frames))
    steps = {"open": [lambda: s.start(None)], "list": [s.list], "read": [lambda: read_all(s)],
             "all": [lambda: s.start(None), s.list, lambda: read_all(s)]}[phase]
    for step in steps:
        try:
            step()
        except FragmentFailure as e:
            assert e.kind != FailureKind.INFRA, e.message
            assert isinstance(e.message, str) and e.message
            return



@pytest.mark.parametrize("extra", ["not json", "[1, 2]", '{"a": ' * 5000])
def test_listing_extra_metadata_that_is_not_a_json_object(conn, extra):
    batch = pa.record_batch([pa.array(["a"]), pa.array(["1"]), pa.array([extra])],
                            schema=LISTING_SCHEMA)
    e = user_failure(session(conn, encode_batch(batch) + LISTED).list)
    assert "'a'" in e.message and "metadata" in e.message, e.message


# --------------------------------------------------------------- log frames

class CountingSource:
    """A sandbox that announces one huge frame: its header, then body bytes made on
    demand (never held by the test), counting how many of them the host asked for."""

    def __init__(self, head: bytes, size: int, prefix: bytes) -> None:
        self._pending = memoryview(head + prefix)
        self._left = size - len(prefix)
        self.served = 0

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        out = bytes(self._pending[:n])
        self._pending = self._pending[len(out):]
        want = n - len(out)
        if want:
            if want > self._left:
                raise EOFError
            self._left -= want
            self.served += want
            out += b"x" * want
        return out


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Connector:
    """A connector with the default output budget (1 GiB)."""
    return _idle(tmp_path_factory.mktemp("roomy") / "c", "name: roomy\n")


@pytest.mark.parametrize("prefix", [b'{"op":"log","text":"', b'{"text":"'],
                         ids=["log-first", "op-last"])
def test_a_forged_giant_log_frame_is_refused_before_it_is_buffered(roomy, prefix):
    # A read's budget (1 GiB by default) would otherwise let one log frame of hundreds
    # of MiB be buffered whole and parsed on the host, for 64 KiB of it to be kept.
    size = 300 << 20
    ch = ScriptedChannel(b"")
    ch.source = CountingSource(HEADER.pack(b"J", size), size, prefix)
    s = FramedSession(ch, roomy, str(roomy.path))
    e = user_failure(read_all, s)
    assert e.kind == FailureKind.USER
    assert "control frame of 300 MiB" in e.message, e.message
    assert ch.source.served < 1 << 20, ch.source.served
    assert not s.usable


def test_a_log_frame_behind_a_reports_first_bytes_is_refused(roomy):
    text = "y" * (2 << 20)
    body = b'{"op":"done","op":"log","text":"' + text.encode() + b'"}'
    e = user_failure(read_all, session(roomy, raw(b"J", body)))
    assert "not what it begins as" in e.message, e.message


def test_a_large_report_and_a_large_error_still_cross(roomy):
    rejects = [{"row": i, "value": "v" * 1000, "reason": "bad"} for i in range(2000)]
    report = encode_json({"op": "done", "rows": 0, "rejected": 2000, "rejects": rejects})
    assert len(report) > LOG_FRAME_CAP
    s = session(roomy, report)
    stream = s.read(Fragment(name="a", fingerprint="1"))
    assert list(stream) == [] and len(stream.report.rejects) == 2000
    error = encode_json({"op": "error", "kind": "user", "message": "m" * (3 << 20)})
    e = user_failure(read_all, session(roomy, error))
    assert e.message.startswith("mmm") and len(e.to_model().message) < 9000
