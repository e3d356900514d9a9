"""A read that logs far more than anyone keeps: the host holds a bounded head and tail
of it (never the whole), the read succeeds, and the log shown says what was cut."""

from __future__ import annotations

import re

from tests.conftest import write_connector
from tests.helpers.peak import run_cli

FLOOD = """
import sys

def list_objects(context, metadata):
    yield {"name": "loud", "fingerprint": "1"}

def read_bytes(context, metadata):
    print("FIRST-LINE")
    block = ("z" * 1023 + "\\n") * 1024         # 1 MiB
    for _ in range(100):                         # 200 MiB in all, both streams
        sys.stdout.write(block)
        sys.stderr.write(block)
    print("LAST-LINE")
    yield "a,b\\n1,2\\n"
"""


def test_a_read_logging_200_mib_succeeds_with_its_log_cut(tmp_path):
    folder = write_connector(tmp_path / "loud", FLOOD, "name: loud\n")
    run = run_cli(tmp_path / "out", "test", str(folder), "--sandbox", "process",
                  timeout=300)
    assert run.returncode == 0, run.stderr
    assert "loud: 1 row(s)" in run.stdout, run.stdout[-2000:]
    shown = run.stdout.split("log of loud:", 1)[1]
    assert "FIRST-LINE" in shown and "LAST-LINE" in shown
    cut = re.search(r"\[(\d+) bytes of log dropped\]", shown)
    assert cut and int(cut.group(1)) > 200_000_000, shown[:300]
    assert len(shown) < 128 << 10
    # The CLI alone (pyarrow, pydantic, rich) peaks near 150 MiB; holding the log
    # would take 200 MiB more.
    print(f"peak RSS {run.maxrss_mib:.0f} MiB")
    assert run.maxrss_mib < 250, run.maxrss_mib
