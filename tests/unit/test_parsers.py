"""Built-in and custom parsers over a ChunkStream (worker.runtime.formats)."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from worker.runtime.formats import ParseError, parse, parse_into
from worker.runtime.stream import ChunkStream
from worker.spec import ParserSpec


def chunked(data: bytes, size: int = 7) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def rows(data: bytes | Iterator[bytes], chunk: int = 7, batch_rows: int = 65536,
         custom: Any = None, **spec: Any) -> list[dict[str, Any]]:
    chunks = chunked(data, chunk) if isinstance(data, bytes) else data
    out: list[dict[str, Any]] = []

    def emit(batch: pa.RecordBatch) -> None:
        assert isinstance(batch, pa.RecordBatch)
        out.extend(batch.to_pylist())

    parse_into(ChunkStream(chunks), ParserSpec(**spec), custom, emit, batch_rows=batch_rows)
    return out


def batches(data: bytes, **spec: Any) -> list[pa.RecordBatch]:
    return list(parse(ChunkStream(chunked(data)), ParserSpec(**spec), batch_rows=2))


# --------------------------------------------------------------------------- xsv


def test_csv_header_all_strings_and_empty_is_null() -> None:
    out = batches(b"id,amount,when\n1,2.5,2024-01-02\n2,,x\n")
    assert [b.schema.types for b in out] == [[pa.string()] * 3]
    assert rows(b"id,amount,when\n1,2.5,2024-01-02\n2,,x\n") == [
        {"id": "1", "amount": "2.5", "when": "2024-01-02"},
        {"id": "2", "amount": None, "when": "x"},
    ]


def test_csv_header_false_names_columns_by_position() -> None:
    assert rows(b"1,a\n2,b\n", header=False) == [
        {"f0": "1", "f1": "a"}, {"f0": "2", "f1": "b"},
    ]


def test_csv_custom_delimiter_quote_and_escape() -> None:
    assert rows(b"a|b\n'x|y'|2\n", delimiter="|", quote="'") == [{"a": "x|y", "b": "2"}]
    assert rows(b'a,b\n"say \\"hi\\"",2\n', escape="\\") == [{"a": 'say "hi"', "b": "2"}]
    assert rows(b'a,b\n"x ""y""",2\n') == [{"a": 'x "y"', "b": "2"}]
    # quoting off: quote characters are data
    assert rows(b'a,b\n"x",2\n', quote=None) == [{"a": '"x"', "b": "2"}]


def test_csv_quoted_newline_in_values_and_header() -> None:
    assert rows(b'"a\nb",c\n"1\n2",3\n', chunk=3, newlines_in_values=True) == [
        {"a\nb": "1\n2", "c": "3"}]


def test_csv_comment_lines_dropped_across_chunk_boundaries() -> None:
    data = b"# leading comment\na,b\n1,2\n# middle\n3,4\n#end"
    for chunk in (1, 3, 5, 100):
        assert rows(data, chunk=chunk, comment="#") == [
            {"a": "1", "b": "2"}, {"a": "3", "b": "4"},
        ]


def test_csv_without_comment_option_keeps_hash_lines() -> None:
    assert rows(b"a\n#x\n") == [{"a": "#x"}]


def test_csv_latin1_encoding() -> None:
    data = "name,city\nJosé,Zürich\n".encode("latin-1")
    assert rows(data, encoding="latin-1") == [{"name": "José", "city": "Zürich"}]


def test_csv_empty_and_header_only_give_no_batches() -> None:
    assert batches(b"") == []
    assert batches(b"\n\n") == []
    assert rows(b"a,b\n") == []


def test_csv_streams_many_small_chunks_and_large_input() -> None:
    n = 50_000
    data = b"a,b\n" + b"".join(b"%d,x%d\n" % (i, i) for i in range(n))
    out = rows(chunked(data, 97))
    assert len(out) == n
    assert out[-1] == {"a": str(n - 1), "b": f"x{n - 1}"}


def test_csv_ragged_row_is_parse_error() -> None:
    with pytest.raises(ParseError,
                       match=r"xsv: line 3 \(row 2\): expected 2 fields, got 3: .3,4,5."):
        rows(b"a,b\n1,2\n3,4,5\n")


@pytest.mark.parametrize("chunk", [1, 5, 7, 1000])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
@pytest.mark.parametrize("comment", [None, "#"])
def test_csv_malformed_row_after_quoted_newlines_names_its_line_and_row(
        chunk: int, end: str, comment: str | None) -> None:
    lines = ['id,note,x', '1,"a', 'b",2', '', '3,"c', '', '""d', '",4',
             '# note' if comment else '5,"""e""",6', '7,bad', '8,y,9']
    data = end.join(lines).encode() + end.encode()
    spec: dict[str, Any] = {"newlines_in_values": True}
    if comment:
        spec["comment"] = comment
    row = 3 if comment else 4
    with pytest.raises(ParseError, match=rf"^xsv: line 10 \(row {row}\): expected 3 fields, "
                                         r"got 2: .7,bad."):
        rows(data, chunk=chunk, **spec)


def test_csv_duplicate_header_names_kept() -> None:
    out = batches(b"a,a\n1,2\n")
    assert out[0].schema.names == ["a", "a"]
    assert out[0].column(1).to_pylist() == ["2"]


# --------------------------------------------------------------------------- json


def test_json_lines_with_blank_lines() -> None:
    data = b'{"a": 1, "b": "x"}\n\n{"a": 2, "b": null}\n'
    assert rows(data, format="json") == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]


def test_json_array_incremental() -> None:
    data = json.dumps([{"a": i, "s": "x]},{"} for i in range(10)], indent=2).encode()
    out = rows(data, chunk=5, batch_rows=3, format="json")
    assert out == [{"a": i, "s": "x]},{"} for i in range(10)]


def test_json_array_batches_by_batch_rows() -> None:
    data = json.dumps([{"a": i} for i in range(5)]).encode()
    got = list(parse(ChunkStream(chunked(data)), ParserSpec(format="json"), batch_rows=2))
    assert [b.num_rows for b in got] == [2, 2, 1]


def test_json_nested_stays_struct_without_flatten() -> None:
    out = batches(b'{"id": 1, "user": {"name": "a", "address": {"city": "X"}}}\n',
                  format="json")
    t = out[0].schema.field("user").type
    assert pa.types.is_struct(t)
    assert out[0].to_pylist()[0]["user"]["address"]["city"] == "X"


@pytest.mark.parametrize("as_array", [False, True])
def test_json_flatten_with_separator(as_array: bool) -> None:
    objs = [{"id": 1, "user": {"name": "a", "address": {"city": "X"}}},
            {"id": 2, "user": None}]
    data = (json.dumps(objs) if as_array else "\n".join(json.dumps(o) for o in objs)).encode()
    assert rows(data, format="json", flatten=True, separator="__") == [
        {"id": 1, "user__name": "a", "user__address__city": "X"},
        {"id": 2, "user__name": None, "user__address__city": None},
    ]
    out = rows(data, format="json", flatten=True)
    assert "user.address.city" in out[0]


def test_json_array_union_of_keys() -> None:
    assert rows(b'[{"a": 1}, {"b": "x"}]', format="json") == [
        {"a": 1, "b": None}, {"a": None, "b": "x"},
    ]


def test_json_empty_gives_no_batches() -> None:
    assert rows(b"", format="json") == []
    assert rows(b"[]", format="json") == []
    assert rows(b"  \n", format="json") == []


def test_json_invalid_line_names_line_number() -> None:
    with pytest.raises(ParseError, match=r"json: line 3: Expecting"):
        rows(b'{"a": 1}\n{"a": 2}\n{"a": nope}\n', format="json")


def test_json_invalid_array_element() -> None:
    with pytest.raises(ParseError, match=r"json: array element 2"):
        rows(b'[{"a": 1}, {"a": ]', format="json")
    with pytest.raises(ParseError, match=r"expected an object"):
        rows(b"[1, 2]", format="json")
    with pytest.raises(ParseError, match="end of input"):
        rows(b'[{"a": 1}', format="json")


# --------------------------------------------------------------------------- avro


AVRO_SCHEMA = {
    "type": "record", "name": "r",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}


def avro_bytes(records: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, AVRO_SCHEMA, records)
    return buf.getvalue()


def test_avro_round_trip_typed_and_batched() -> None:
    records = [{"id": i, "name": None if i % 2 else f"n{i}", "day": dt.date(2024, 1, 1),
                "tags": ["a"] * (i % 3)} for i in range(7)]
    got = list(parse(ChunkStream(chunked(avro_bytes(records), 11)),
                     ParserSpec(format="avro"), batch_rows=3))
    assert [b.num_rows for b in got] == [3, 3, 1]
    # the Arrow schema comes from the Avro schema, even for an all-null batch
    assert got[-1].schema.field("name").type == pa.string()
    assert got[0].schema.field("day").type == pa.date32()
    assert [r for b in got for r in b.to_pylist()] == records


def test_avro_corrupt_is_parse_error() -> None:
    data = avro_bytes([{"id": 1, "name": "x", "day": dt.date(2024, 1, 1), "tags": []}])
    with pytest.raises(ParseError, match="avro: "):
        rows(b"not avro at all", format="avro")
    with pytest.raises(ParseError, match="avro: "):
        rows(data[: len(data) - 5], format="avro")


# --------------------------------------------------------------------------- parquet


def test_parquet_round_trip_and_temp_file_removed() -> None:
    table = pa.table({"a": list(range(10)), "b": [f"x{i}" for i in range(10)]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    before = set(os.listdir(tempfile.gettempdir()))
    got = list(parse(ChunkStream(chunked(sink.getvalue(), 100)),
                     ParserSpec(format="parquet"), batch_rows=4))
    assert [b.num_rows for b in got] == [4, 4, 2]
    assert pa.Table.from_batches(got).equals(table)
    leftover = {f for f in set(os.listdir(tempfile.gettempdir())) - before
                if f.startswith("fragment-")}
    assert leftover == set()


def test_parquet_corrupt_is_parse_error() -> None:
    with pytest.raises(ParseError, match="parquet: "):
        rows(b"PAR1 this is not parquet", format="parquet")


# --------------------------------------------------------------------------- custom


def test_custom_text_reader() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        for line in reader:
            k, v = line.rstrip("\n").split("=")
            on_next({"key": k, "value": int(v)})

    out = rows(b"a=1\r\nb=2\nc=3", chunk=2, batch_rows=2, format="custom",
               custom=parser_function)
    assert out == [{"key": "a", "value": 1}, {"key": "b", "value": 2},
                   {"key": "c", "value": 3}]


def test_custom_text_reader_has_buffer_and_encoding() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        assert reader.buffer is not None
        on_next({"text": reader.read()})

    assert rows("Zürich".encode("latin-1"), format="custom", encoding="latin-1",
                custom=parser_function) == [{"text": "Zürich"}]


def test_custom_binary_reader() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        while rec := reader.read(4):
            on_next({"n": int.from_bytes(rec, "big")})

    data = b"".join(i.to_bytes(4, "big") for i in range(10))
    out = rows(data, chunk=3, batch_rows=4, format="custom", reader="binary",
               custom=parser_function)
    assert [r["n"] for r in out] == list(range(10))


def test_custom_streams_batches_before_function_returns() -> None:
    produced: list[int] = []
    seen_at_emit: list[int] = []

    def parser_function(reader: Any, on_next: Any) -> None:
        for i in range(1000):
            produced.append(i)
            on_next({"i": i})

    parse_into(ChunkStream([b""]), ParserSpec(format="custom"), parser_function,
               lambda b: seen_at_emit.append(len(produced)), batch_rows=10)
    assert seen_at_emit[:2] == [10, 20]  # each batch leaves as soon as it is full
    assert len(seen_at_emit) == 100


def test_custom_emit_error_is_not_swallowed_by_user_except() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        for i in range(5):
            try:  # noqa: SIM105 - a user swallowing errors, on purpose
                on_next({"i": i})
            except Exception:
                pass

    def emit(batch: pa.RecordBatch) -> None:
        raise ValueError("conform says no")

    with pytest.raises(ValueError, match="conform says no"):
        parse_into(ChunkStream([b""]), ParserSpec(format="custom"), parser_function, emit,
                   batch_rows=2)


def test_custom_on_next_rejects_non_dict_with_row_number() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        on_next({"a": 1})
        on_next(5)

    with pytest.raises(TypeError, match=r"onNext expects a dict, got int \(row 2\)"):
        rows(b"x", format="custom", custom=parser_function)


def test_custom_user_exception_object_survives() -> None:
    class Boom(Exception):
        pass

    err = Boom("bad record")

    def parser_function(reader: Any, on_next: Any) -> None:
        on_next({"a": 1})
        raise err

    with pytest.raises(Boom) as info:
        rows(b"x", format="custom", custom=parser_function)
    assert info.value is err
    assert any(entry.name == "parser_function" for entry in info.traceback)


def test_custom_union_of_keys() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        on_next({"a": 1})
        on_next({"b": "x"})

    assert rows(b"", format="custom", custom=parser_function) == [
        {"a": 1, "b": None}, {"a": None, "b": "x"},
    ]


# --------------------------------------------------------------------------- errors


class UserError(Exception):
    pass


def failing_chunks(first: bytes) -> Iterator[bytes]:
    yield first
    raise UserError("connection reset")


@pytest.mark.parametrize("fmt, first", [
    ("xsv", b"a,b\n1,2\n3,"),
    ("json", b'{"a": 1}\n{"a"'),
    ("json", b'[{"a": 1}, {"a"'),
    ("avro", b"Obj\x01"),
    ("parquet", b"PAR1"),
])
def test_user_generator_error_wins(fmt: str, first: bytes) -> None:
    with pytest.raises(UserError, match="connection reset"):
        rows(failing_chunks(first), format=fmt)


def test_user_generator_error_wins_in_custom_parser() -> None:
    def parser_function(reader: Any, on_next: Any) -> None:
        try:
            for line in reader:
                on_next({"line": line})
        except UserError:
            raise ValueError("wrapped") from None

    with pytest.raises(UserError):
        rows(failing_chunks(b"a\nb\n"), format="custom", custom=parser_function)


def test_non_bytes_chunk_error_surfaces() -> None:
    from worker.runtime.stream import ChunkTypeError

    def chunks() -> Iterator[Any]:
        yield b"a,b\n"
        yield 42

    with pytest.raises(ChunkTypeError, match="yielded int"):
        rows(chunks())


def test_csv_reader_reads_a_bounded_number_of_blocks_ahead_of_its_consumer() -> None:
    """pyarrow's streaming CSV reader reads blocks on a thread of its own; unchecked it
    queues 32 of them (128 MiB) while the runtime is busy with the last batch. Here the
    consumer holds the first batch for a while: what the reader pulled from the fragment
    stays a few blocks, however long the consumer takes."""
    import time

    from worker.runtime.adapters import BLOCK_SIZE

    line = b"1,2024-01-02T00:00:00,abcdefgh,12.5,7,x,y,some text of thirty letters\n"
    block = line * (BLOCK_SIZE // len(line))
    total = 24 * len(block)  # 24 blocks of the reader's size

    def chunks() -> Iterator[bytes]:
        yield b"a,b,c,d,e,f,g,h\n"
        for _ in range(total // len(block)):
            yield block

    stream = ChunkStream(chunks())
    batches = parse(stream, ParserSpec())
    first = next(batches)
    assert first.num_rows > 0
    bound = 6 * BLOCK_SIZE  # the first block, the reader's allowance, buffers in between
    # The reader thread's time to run ahead if it can (unchecked it reads the 24 blocks in
    # milliseconds), shorter than PacedReads' patience.
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and stream.bytes_read <= bound:
        time.sleep(0.01)
    assert stream.bytes_read <= bound, f"read {stream.bytes_read >> 20} MiB ahead"
    rows = first.num_rows + sum(b.num_rows for b in batches)  # and nothing is lost
    assert rows == total // len(line)


def test_custom_mixed_python_types_are_cast_to_the_declared_types_in_process() -> None:
    import datetime as dt
    import decimal
    import uuid

    from worker.runtime.conform import Conformer
    from worker.runtime.rejects import RowRejects
    from worker.spec import Schema

    def parser_function(reader: Any, on_next: Any) -> None:
        on_next({"at": dt.datetime(2026, 1, 2, 3, 4, 5), "amount": decimal.Decimal("1.50"),
                 "ref": uuid.UUID(int=3), "tags": {"a": 1}})
        on_next({"at": "2026-01-03T00:00:00+01:00", "amount": 2, "ref": "plain",
                 "tags": [1, dt.date(2026, 1, 4)]})
        on_next({"at": "never", "amount": "2.5", "ref": 7, "tags": "x"})

    schema = Schema.model_validate({"on_invalid": "default", "max_errors": 5, "columns": [
        {"name": "at", "type": "timestamp"}, {"name": "amount", "type": "decimal(10,2)"},
        {"name": "ref", "type": "string"}, {"name": "tags", "type": "string"}]})
    spec = ParserSpec(format="custom")
    log = RowRejects("f", schema, spec)
    conformer = Conformer(schema, "f", log)
    out: list[dict[str, Any]] = []
    parse_into(ChunkStream([b""]), spec, parser_function,
               lambda b: out.extend(conformer.conform(b).to_pylist()), rejects=log)
    utc = dt.UTC
    assert [r["at"] for r in out] == [dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc),
                                      dt.datetime(2026, 1, 2, 23, 0, tzinfo=utc), None]
    assert [r["amount"] for r in out] == [decimal.Decimal("1.50"), decimal.Decimal("2.00"),
                                          decimal.Decimal("2.50")]
    assert [r["ref"] for r in out] == ["00000000-0000-0000-0000-000000000003", "plain", "7"]
    assert [r["tags"] for r in out] == ['{"a":1}', '[1,"2026-01-04"]', "x"]
    assert [(rec.row, rec.column, rec.value) for rec in log.records] == [(3, "at", "never")]
