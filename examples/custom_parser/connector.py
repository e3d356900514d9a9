"""The reference page's example: credentials as JSON, a custom line parser."""

import json


def context(credentials: str):
    try:
        return json.loads(credentials)
    except Exception:
        return {}


def list_objects(context: dict, metadata: dict):
    if not metadata:
        yield {"name": "fragment1", "fingerprint": "md51", "is_prefix": False}
        yield {"name": "fragment2", "fingerprint": "md52", "is_prefix": False}
        yield {"name": "folder1", "fingerprint": "fmd51", "is_prefix": True}
    elif metadata["name"] == "folder1":
        yield {"name": "folder1/fragment3", "fingerprint": "md53", "is_prefix": False}


def read_bytes(context: dict, metadata: dict):
    greeting = context.get("greeting", "hello")
    yield ",".join([metadata["name"], metadata["fingerprint"]]) + "\n"
    yield f"{greeting} from {metadata['name']}\n"


def parser_function(reader, onNext):
    for line in reader:
        line = line.strip()
        if line:
            onNext(json.loads('{ "col1":"' + line + '" }'))
