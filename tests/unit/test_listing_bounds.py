"""A listing cannot take the host's memory, and a stopped CLI stops.

The host holds a listing whole (to diff it), so what a listing may bring is capped in
bytes and in fragments, with a clear error; SIGTERM ends a refresh promptly, however
many fragments are still to read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.helpers.peak import run_cli

FAT_CODE = '''
def list_objects(context, metadata):
    pad = "m" * 30_000
    for i in range({n}):
        yield {{"name": f"f{{i:06d}}", "fingerprint": "1", "meta": pad + str(i)}}

def read_bytes(context, metadata):
    yield "a\\n1\\n"
'''


def test_listing_over_the_byte_cap_fails_clearly_in_bounded_memory(connector, tmp_path):
    # 35,000 objects with 30 KB of metadata each: about 1 GB of listing.
    c = connector(FAT_CODE.format(n=35_000), "name: fat\nlimits: {timeout: 600}\n")
    run = run_cli(tmp_path / "out", "refresh", str(c), "--json", "--sandbox", "process")
    assert run.returncode == 1, run.stderr
    assert run.failure(None) == "(limit) listing exceeded 64 MiB", run.stderr
    assert run.maxrss_mib < 400, run.maxrss_mib


MANY_CODE = '''
def list_objects(context, metadata):
    for i in range({n}):
        yield {{"name": f"f{{i:07d}}", "fingerprint": "1"}}

def read_bytes(context, metadata):
    yield "a\\n1\\n"
'''


def test_listing_over_the_fragment_cap_fails_clearly(connector, tmp_path):
    c = connector(MANY_CODE.format(n=5000), "name: many\n")
    run = run_cli(tmp_path / "out", "refresh", str(c), "--json", "--sandbox", "process",
                  env={"CONNECTOR_MAX_LISTED_FRAGMENTS": "4000"})
    assert run.returncode == 1, run.stderr
    assert run.failure(None) == (
        "(limit) list_objects yielded more than 4,000 fragments (the operator's limit, "
        "CONNECTOR_MAX_LISTED_FRAGMENTS)"), run.stderr
    ok = run_cli(tmp_path / "out", "refresh", str(c), "--json", "--sandbox", "process",
                 env={"CONNECTOR_MAX_LISTED_FRAGMENTS": "5000"})
    assert ok.returncode == 0 and ok.summary["read"] == 5000, ok.stderr


SLOW_CODE = '''
import pathlib, time
READS = pathlib.Path({reads!r})

def list_objects(context, metadata):
    for i in range(100_000):
        yield {{"name": f"f{{i:06d}}", "fingerprint": "1"}}

def read_bytes(context, metadata):
    with open(READS, "a") as f:
        f.write(metadata["name"] + "\\n")
    time.sleep(0.2)
    yield "a\\n1\\n"
'''


def test_sigterm_stops_a_refresh_with_many_fragments_left(connector, tmp_path):
    reads = tmp_path / "reads.log"
    reads.touch()
    c = connector(SLOW_CODE.format(reads=str(reads)), "name: slow\n")
    p = subprocess.Popen([sys.executable, "-m", "worker.cli", "refresh", str(c), "--json",
                          "--sandbox", "process", "--concurrency", "2"], cwd=ROOT,
                         env={**os.environ, "CONNECTOR_OUTPUT": str(tmp_path / "out")},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(reads.read_text().split()) < 4:  # reading has begun
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    try:
        # 100,000 fragments at 0.2 s on two lanes would take hours: stopping means the
        # running reads are abandoned, not the whole listing worked through.
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("the CLI ignored SIGTERM") from None
    assert p.returncode == 128 + signal.SIGTERM, err
    assert len(reads.read_text().split()) < 1000


LONG_CODE = '''
def list_objects(context, metadata):
    yield {{"name": "ok", "fingerprint": "1"}}
    yield {{"name": {name!r}, "fingerprint": {fingerprint!r}}}

def read_bytes(context, metadata):
    yield "a\\n1\\n"
'''


def test_a_fragment_name_or_fingerprint_over_its_cap_fails_the_listing(connector, cli):
    # Every name and fingerprint is kept in the state store (Redis, shared by every
    # tenant, in queue mode) several times over: each is capped.
    long_name = "n" * 1025
    c = connector(LONG_CODE.format(name=long_name, fingerprint="1"), "name: longname\n")
    r, _ = cli.refresh(c)
    assert r.returncode == 1, r.stderr
    assert ("listing failed (limit): list_objects yielded a fragment name of 1,025 bytes "
            f"('{'n' * 40}'...); the limit is 1,024 (CONNECTOR_MAX_FRAGMENT_NAME_BYTES)"
            ) in r.stderr, r.stderr
    c = connector(LONG_CODE.format(name="big", fingerprint="f" * 5000), "name: longfp\n",
                  name="fp")
    r, _ = cli.refresh(c)
    assert r.returncode == 1, r.stderr
    assert ("listing failed (limit): list_objects yielded fragment 'big' with a "
            "fingerprint of 5,000 bytes; the limit is 1,024 "
            "(CONNECTOR_MAX_FINGERPRINT_BYTES)") in r.stderr, r.stderr
    ok = connector(LONG_CODE.format(name="é" * 512, fingerprint="f" * 1024), "name: fits\n",
                   name="fits")
    r, s = cli.refresh(ok)
    assert r.returncode == 0 and s["read"] == 2, r.stderr
