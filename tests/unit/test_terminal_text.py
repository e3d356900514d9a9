"""User strings reach the terminal as literal text: rich markup in them is not
interpreted, and control characters (ESC sequences above all) are shown escaped."""

from __future__ import annotations

ESC_NAME = "\x1b[31mred\x1b[0m"
HOSTILE_CODE = '''
import sys

NAMES = ["[/red]", "[bold]x[/bold]", {esc!r}, "tab\\there", "bidi\\u202eevil"]

def list_objects(context, metadata):
    for name in NAMES:
        yield {{"name": name, "fingerprint": "[/]"}}
    yield {{"name": "z_fails", "fingerprint": "1"}}

def read_bytes(context, metadata):
    name = metadata["name"]
    print("log says \\x1b]0;pwned\\x07 [/red] \\x1b[2J")
    if name == "z_fails":
        raise ValueError("error says \\x1b[31m [/red] \\x9b2J")
    yield "name,v\\n"
    yield '"' + name.replace('"', '""') + '",[/red]\\x1b[1m\\n'
'''


def assert_literal(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text, repr(text)
    assert "\u202e" not in text, repr(text)
    assert "MarkupError" not in text and "Traceback" not in text.split("ValueError")[0]


def test_test_show_and_refresh_print_user_strings_literally(connector, cli):
    c = connector(HOSTILE_CODE.format(esc=ESC_NAME), "name: hostile_text\n")
    t = cli("test", str(c), "--sandbox", "process", "--limit", "6")
    assert t.returncode == 1, t.stderr
    assert_literal(t.stdout + t.stderr)
    assert "[/red]" in t.stdout and "[bold]x[/bold]" in t.stdout
    assert "\\x1b[31mred\\x1b[0m" in t.stdout, t.stdout
    assert "\\u202e" in t.stdout
    assert "error says \\x1b[31m [/red] \\x9b2J" in t.stderr, t.stderr
    assert "log says \\x1b]0;pwned\\x07" in t.stdout

    r, s = cli.refresh(c, "--concurrency", "1")
    assert s["failed"] == 1, r.stderr
    assert_literal(r.stdout + r.stderr)
    assert "error says" in r.stderr

    shown = cli("show", str(c))
    assert shown.returncode == 0, shown.stderr
    assert_literal(shown.stdout + shown.stderr)
    assert "[/red]" in shown.stdout and "\\x1b[1m" in shown.stdout
