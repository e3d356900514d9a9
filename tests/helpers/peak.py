"""One CLI run measured: its exit, output, JSON summary and peak memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT


@dataclass
class Run:
    """One CLI run: exit code, output, its JSON summary, and its peak memory."""

    returncode: int
    stdout: str
    stderr: str
    maxrss_mib: float
    seconds: float
    summary: dict = field(default_factory=dict)

    def failure(self, fragment: str | None) -> str:
        """The CLI's one-line failure report for a fragment, or the listing's (None); ''
        if it did not fail."""
        what = "listing" if fragment is None else f"fragment '{re.escape(fragment)}'"
        m = re.search(rf"^{what} failed \((\w+)\): (.*)", self.stderr, re.MULTILINE)
        return f"({m.group(1)}) {m.group(2)}" if m else ""


def _vm_hwm_mib(pid: int) -> float:
    """A live process's peak RSS since its exec. wait4's ru_maxrss would also count the
    pages it shared with this pytest process before exec, so a long test session (whose
    RSS grows) would inflate every CLI's figure."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_cli(output: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> Run:
    """Run the CLI like `Cli` does, and also measure its peak RSS (wait4's rusage)."""
    full_env = {**os.environ, "CONNECTOR_OUTPUT": str(output), **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                             stdout=out, stderr=err, text=True, env=full_env)
        deadline = time.monotonic() + timeout
        hwm = 0.0  # the CLI's own peak (VmHWM), sampled: see _vm_hwm_mib
        while True:
            hwm = max(hwm, _vm_hwm_mib(p.pid))
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return Run(p.returncode, stdout, stderr, hwm or usage.ru_maxrss / 1024, seconds,
               json.loads(lines[-1]) if lines else {})
