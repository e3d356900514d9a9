"""Avro: each day's events are encoded with fastavro as the fragment is read."""

import io

import fastavro

SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "Event",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "kind", "type": "string"},
        {"name": "value", "type": ["null", "double"]},
    ],
})
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def list_objects(context, metadata):
    for day in DAYS:
        yield {"name": f"events/{day}.avro", "fingerprint": f"v1-{day}"}


def read_bytes(context, metadata):
    day = metadata["name"].split("/")[1][:10]
    offset = DAYS.index(day) * 100
    records = [
        {"id": offset + i, "kind": ["click", "view", "buy"][i % 3],
         "value": None if i % 10 == 0 else i * 1.5}
        for i in range(100)
    ]
    buf = io.BytesIO()
    fastavro.writer(buf, SCHEMA, records)
    data = buf.getvalue()
    for i in range(0, len(data), 1024):
        yield data[i:i + 1024]
