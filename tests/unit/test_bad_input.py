"""Every bad input gets a clear error naming the thing and the reason, and loses nothing."""

from __future__ import annotations

import pytest

GOOD_CODE = """
def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "a,b\\n1,2\\n"
"""
GOOD_SPEC = "name: good\n"


# --- the folder itself (exit 2, nothing run) -------------------------------------------

@pytest.mark.parametrize(("spec", "needle"), [
    ("name: Bad Name\n", "connector.yaml: name: must be 1 to 63 characters"),
    ("tenant: t\n", "connector.yaml: name: Field required"),
    ("name: x\nparser: {format: xml}\n", "connector.yaml: parser.format"),
    ("name: x\nschema: [{name: a, type: integer}]\n", "unknown type 'integer'"),
    ("name: x\nlimits: {memory: lots}\n", "limits.memory: not a size"),
    ("name: x\nbogus: 1\n", "bogus: unknown field (expected one of name, tenant"),
    ("name: x\nparser: {delimiter: ';;'}\n", "parser.delimiter: must be a single character"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: x\npackages: ['pandas; rm -rf /']\n", "not a pip requirement"),
])
def test_invalid_yaml_fields(connector, cli, spec, needle):
    c = connector(GOOD_CODE, spec)
    r = cli("validate", str(c))
    assert r.returncode == 2
    assert needle in r.stderr.replace("\n", " ") or needle in r.stderr, r.stderr


def test_syntax_error_names_file_and_line(connector, cli):
    c = connector("def list_objects(context, metadata)\n    pass\n", GOOD_SPEC)
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 2
    assert "connector.py:1: syntax error" in r.stderr


def test_missing_functions(connector, cli):
    c = connector("def list_objects(c, m):\n    return []\n", "name: x\nparser: {format: custom}\n")
    r = cli("validate", str(c))
    assert r.returncode == 2
    assert "missing function(s): read_bytes, parser_function" in r.stderr


def test_missing_credentials_env(connector, cli):
    c = connector(GOOD_CODE, "name: x\ncredentials: {env: NO_SUCH_VAR_X}\n")
    r = cli("refresh", str(c), "--sandbox", "process")
    assert r.returncode == 2
    assert "environment variable NO_SUCH_VAR_X is not set" in r.stderr


# --- user code misbehaving (exit 1, named fragment, reason) -------------------------------

def refresh_fails(cli, folder, *needles: str) -> str:
    r, s = cli.refresh(folder)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert s.get("failed", 0) >= 1
    for n in needles:
        assert n in r.stderr, r.stderr
    return r.stderr


def test_list_objects_yields_non_dict(connector, cli):
    c = connector("def list_objects(c, m):\n    yield 'one'\ndef read_bytes(c, m):\n    yield ''\n",
                  GOOD_SPEC)
    refresh_fails(cli, c, "list_objects({}) yielded str as item 1")


def test_list_objects_duplicate_name(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
    yield {"name": "x", "fingerprint": "2"}
def read_bytes(c, m):
    yield ''
""", GOOD_SPEC)
    refresh_fails(cli, c, "yielded the name 'x' twice")


def test_list_objects_non_string_fingerprint(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "x", "fingerprint": 5}
def read_bytes(c, m):
    yield ''
""", GOOD_SPEC)
    refresh_fails(cli, c, "'fingerprint' must be a string, got int")


def test_read_bytes_yields_int(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n"
    yield 42
""", GOOD_SPEC)
    refresh_fails(cli, c, "read_bytes yielded int as chunk 2", "'x'")


@pytest.mark.parametrize(("fmt", "payload", "needle"), [
    ("xsv", "a,b\n1,2\n3,4,5\n", "line 3 (row 2): expected 2 fields, got 3"),
    ("json", '{"a": 1}\n{"a": \n', "json: line 2"),
    ("avro", "Obj\x01 definitely not avro", "avro"),
])
def test_malformed_bytes(connector, cli, fmt, payload, needle):
    c = connector(f"""
def list_objects(c, m):
    yield {{"name": "bad.{fmt}", "fingerprint": "1"}}
def read_bytes(c, m):
    yield {payload!r}.encode("latin-1")
""", f"name: x\nparser: {{format: {fmt}}}\n")
    err = refresh_fails(cli, c, "bad.", "(data)")
    assert needle.lower() in err.lower()


def test_type_that_cannot_cast_names_row_column_value(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "prices.csv", "fingerprint": "1"}
def read_bytes(c, m):
    yield "sku,price\\na,1.5\\nb,2.0\\nc,cheap\\n"
""", "name: x\nschema:\n  - {name: sku}\n  - {name: price, type: float64}\n")
    refresh_fails(cli, c, "prices.csv", "row 3", "price", "cheap")


def test_skip_invalid_rows_within_max_errors(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "prices.csv", "fingerprint": "1"}
def read_bytes(c, m):
    yield "sku,price\\na,1.5\\nb,2.0\\nc,cheap\\n"
""", "name: x\nschema:\n  columns:\n    - {name: sku}\n    - {name: price, type: float64}\n"
     "  on_invalid: skip\n  max_errors: 1\n")
    r, s = cli.refresh(c)
    assert r.returncode == 0, r.stderr
    assert sorted(x["sku"] for x in cli.rows(c)) == ["a", "b"]


@pytest.mark.parametrize(("where", "code", "needle"), [
    ("context", """
def context(credentials):
    raise ValueError("bad token")
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n1\\n"
""", "context() raised ValueError: bad token"),
    ("list_objects", """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
    raise KeyError("page 2")
def read_bytes(c, m):
    yield "a\\n1\\n"
""", "list_objects({}) raised KeyError"),
    ("read_bytes", """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n1\\n"
    raise ConnectionError("socket closed")
""", "read_bytes('x') raised ConnectionError: socket closed"),
    ("parser_function", """
def list_objects(c, m):
    yield {"name": "x", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n1\\n"
def parser_function(reader, onNext):
    for line in reader:
        onNext({"v": int(line)})
""", "ValueError: invalid literal for int()"),
])
def test_user_exceptions_carry_traceback(connector, cli, where, code, needle):
    spec = GOOD_SPEC + ("parser: {format: custom}\n" if where == "parser_function" else "")
    c = connector(code, spec)
    err = refresh_fails(cli, c, needle)
    assert "Traceback" in err and "connector.py" in err
    assert "worker/runtime" not in err  # runtime frames are trimmed away


def test_timeout(connector, cli):
    c = connector("""
import time
def list_objects(c, m):
    yield {"name": "slow", "fingerprint": "1"}
def read_bytes(c, m):
    yield "a\\n"
    time.sleep(60)
""", "name: x\nlimits: {timeout: 2}\n")
    refresh_fails(cli, c, "'slow'", "timed out after 2 s")


def test_memory_limit(connector, cli):
    c = connector("""
def list_objects(c, m):
    yield {"name": "big", "fingerprint": "1"}
def read_bytes(c, m):
    hog = []
    while True:
        hog.append(bytearray(16 << 20))
    yield b""
""", "name: x\nlimits: {memory: 256m}\n")
    refresh_fails(cli, c, "'big'", "out of memory (limit 256 MiB)")


def test_failure_then_success_keeps_committed_data(connector, cli):
    """A refresh where one fragment fails keeps everything else; fixing it completes it."""
    code = """
import pathlib
HERE = pathlib.Path(__file__).parent
def list_objects(c, m):
    for i in range(8):
        yield {"name": f"p{i}", "fingerprint": "v1"}
def read_bytes(c, m):
    if m["name"] == "p4" and (HERE / "broken").exists():
        raise IOError("disk on fire")
    yield f"n\\n{m['name'][1:]}\\n"
"""
    c = connector(code, "name: x\nschema: [{name: n, type: int32}]\n", files={"broken": ""})
    r, s = cli.refresh(c, "--concurrency", "2")
    assert r.returncode == 1 and s["failed"] == 1
    before = sorted(x["n"] for x in cli.rows(c))
    assert 4 not in before
    (c / "broken").unlink()
    r, s = cli.refresh(c, "--concurrency", "2")
    assert r.returncode == 0, r.stderr
    assert s["read"] == 8 - len(before)
    assert sorted(x["n"] for x in cli.rows(c)) == list(range(8))


SURROGATE_CODE = '''
def list_objects(context, metadata):
    yield {"name": "fine", "fingerprint": "1"}
    yield {"name": "bad\\udc80name", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "a\\n1\\n"
'''


def test_lone_surrogate_in_a_fragment_name_is_the_users_error(connector, cli):
    c = connector(SURROGATE_CODE, GOOD_SPEC)
    r, s = cli.refresh(c)
    assert r.returncode == 1
    assert ("listing failed (user): list_objects({}) item 2 ('bad\\udc80name'): "
            "'name' is not valid Unicode text (it holds a lone surrogate)") in r.stderr, r.stderr
    assert "runtime error" not in r.stderr
