"""Where the time goes: the pipeline's stages run one after another in one process, on
the same fragment bytes, each timed alone (sequential, single consumer).

user code  -> iterating read_bytes() through ChunkStream (the connector's own cost)
parse      -> worker.runtime.formats.parse (pyarrow CSV reader, all columns as strings)
conform    -> worker.runtime.conform.Conformer (casts to the declared schema)
IPC encode -> worker.protocol.encode_batch (runtime side)
IPC decode -> worker.sandbox.frames.decode_batch (host side, validated)
Parquet    -> worker.sink.Output.write (tmp + rename)
commit     -> SqliteState.commit

In the sandboxes the runtime's stages (user code .. IPC encode) and the host's
(IPC decode .. commit) run in different processes, so they overlap on 2 cores.
"""

from __future__ import annotations

import time

from bench import workload
from bench.common import Report, Workdir, section
from worker.models import Commit
from worker.protocol import encode_batch, read_frame
from worker.runtime.conform import Conformer
from worker.runtime.formats import parse
from worker.runtime.stream import ChunkStream
from worker.sandbox.frames import decode_batch
from worker.sink import Output
from worker.spec import ConnectorSpec
from worker.state.sqlite import SqliteState


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = memoryview(data), 0

    def read_exact(self, n: int, deadline: float | None) -> bytes:
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return bytes(out)


def measure(work: Workdir, fragments: int, rows: int) -> dict[str, float]:
    import yaml

    spec = ConnectorSpec.model_validate(yaml.safe_load(workload.csv_spec("stages")))
    data = workload.csv_bytes(rows)
    chunks = [data[i:i + workload.CHUNK] for i in range(0, len(data), workload.CHUNK)]
    out = work.fresh_output("stages")
    output, state = Output(str(out)), SqliteState(out / "state.sqlite")
    t: dict[str, float] = dict.fromkeys(
        ["user code", "parse", "conform", "IPC encode", "IPC decode", "Parquet write",
         "commit"], 0.0)
    for i in range(fragments):
        t0 = time.perf_counter()
        raw = ChunkStream(iter(chunks)).readall()
        t["user code"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        parsed = list(parse(ChunkStream(iter(chunks)), spec.parser))
        t["parse"] += time.perf_counter() - t0
        assert raw

        conformer = Conformer(spec.schema_, f"part-{i}")
        t0 = time.perf_counter()
        conformed = [conformer.conform(b) for b in parsed]
        t["conform"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        frames = b"".join(encode_batch(b) for b in conformed)
        t["IPC encode"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        src = _Bytes(frames)
        decoded = [decode_batch(read_frame(src, None)[1]) for _ in conformed]
        t["IPC decode"] += time.perf_counter() - t0

        rel = output.new_fragment_file(f"part-{i}")
        t0 = time.perf_counter()
        n = output.write(f"{output.dataset_dir('default', 'stages')}/{rel}", decoded)
        t["Parquet write"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        state.stage("bench", Commit(name=f"part-{i}", fingerprint="v1", path=rel, rows=n))
        t["commit"] += time.perf_counter() - t0
    return t


def run(report: Report, work: Workdir, *, fragments: int, rows: int) -> dict[str, float]:
    section(f"stages: {fragments} fragments x {rows:,} rows, each stage alone, in-process")
    t = measure(work, fragments, rows)
    total = sum(t.values())
    n = fragments * rows
    for k, v in t.items():
        print(f"  {k:14s} {v * 1e3:9.1f} ms  {v / total * 100:5.1f}%  "
              f"{n / v / 1e6 if v else float('inf'):8.2f} M rows/s", flush=True)
    print(f"  {'sum':14s} {total * 1e3:9.1f} ms            {n / total / 1e6:8.2f} M rows/s")
    report.notes.append("stages (ms): " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in t.items()))
    return t
