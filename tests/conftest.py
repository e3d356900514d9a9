"""Shared fixtures: connector folders written on the fly, and the CLI run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.settings import settings

ROOT = Path(__file__).resolve().parents[1]

# The Docker engine is shared with other test runs on this host, whose images a test must
# never remove: the image store's bounds are out of reach unless a test sets them
# (tests/integration/docker/test_image_store.py). Set before any settings() call, so CLI
# and worker subprocesses inherit it too. (Code tags of the repository naming before
# worker/naming.py have no bound: a build removes those of the connector it built, which
# nothing runs any more.)
os.environ.setdefault("CONNECTOR_KEEP_CODE_IMAGES", "1000000")
os.environ.setdefault("CONNECTOR_KEEP_PACKAGES_IMAGES", "1000000")
os.environ.setdefault("CONNECTOR_KEEP_BASE_IMAGES", "1000000")
os.environ.setdefault("CONNECTOR_PRUNE_UNTAGGED_AFTER", "1000000000")


# A connector whose one row is its credentials: what a test must never see leak.
ECHO_CODE = '''
def context(credentials):
    return credentials

def list_objects(context, metadata):
    yield {"name": "one", "fingerprint": "1"}

def read_bytes(context, metadata):
    yield "got\\n" + context.replace("\\n", " ").replace("\\x00", " ") + "\\n"
'''


def table_files(output: Path, tenant: str, name: str) -> list[str]:
    """The files the dataset's current Delta table version holds."""
    from deltalake import DeltaTable

    return DeltaTable(str(output / tenant / name)).file_uris()


def write_connector(folder: Path, code: str, spec: str,
                    files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connector.py").write_text(textwrap.dedent(code))
    (folder / "connector.yaml").write_text(textwrap.dedent(spec))
    for name, text in (files or {}).items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return folder


@pytest.fixture
def connector(tmp_path: Path) -> Callable[..., Path]:
    """connector(code, spec, name="c", files=None) -> folder path."""

    def make(code: str, spec: str, name: str = "c", files: dict[str, str] | None = None) -> Path:
        return write_connector(tmp_path / name, code, spec, files)

    return make


class Cli:
    def __init__(self, output: Path) -> None:
        self.output = output

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 240) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "CONNECTOR_OUTPUT": str(self.output), **(env or {})}
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, env=full_env, timeout=timeout)

    def refresh(self, path: Path, *extra: str, sandbox: str = "process",
                env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict]:
        r = self("refresh", str(path), "--json", "--sandbox", sandbox, *extra, env=env)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        return r, (json.loads(lines[-1]) if lines else {})

    def rows(self, path: Path) -> list[dict]:
        r = self("show", str(path), "--jsonl", "--limit", "100000000")
        assert r.returncode == 0, r.stderr
        return [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "out")


# --- Redis (queue mode) ------------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")


@pytest.fixture
def redis_client():
    """A real Redis; a missing one is an error, not a skip (`scripts/start-redis.sh`)."""
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        r.ping()
    except redis.exceptions.ConnectionError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}); start it with "
                    "scripts/start-redis.sh 6390")
    yield r
    r.close()


@pytest.fixture
def redis_prefix(redis_client, monkeypatch):
    """Unique key prefixes for this test (ours and RQ's), deleted afterwards."""
    import uuid

    tag = uuid.uuid4().hex[:10]
    ours, rqs = f"cxt{tag}", f"rqt{tag}"
    monkeypatch.setenv("CONNECTOR_REDIS_PREFIX", ours)
    settings.cache_clear()
    yield ours, rqs
    monkeypatch.undo()
    settings.cache_clear()
    for p in (ours, rqs):
        keys = list(redis_client.scan_iter(match=f"{p}*", count=1000))
        for i in range(0, len(keys), 500):
            redis_client.delete(*keys[i:i + 500])


class QueueEnv:
    """Queue mode as a user runs it: the CLI and real worker processes, against a real
    Redis, under this test's own key prefixes."""

    def __init__(self, tmp: Path, prefixes: tuple[str, str]) -> None:
        self.tmp = tmp
        self.output = tmp / "qout"
        self.env = {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "CONNECTOR_REDIS_PREFIX": prefixes[0],
            "RQ_KEY_PREFIX": prefixes[1],
            "CONNECTOR_SANDBOX": "process",
            # The suite's connectors are trusted code: one worker serves every tenant.
            "CONNECTOR_PROCESS_SANDBOX_TENANTS": "*",
            "CONNECTOR_BUNDLE_CACHE": str(tmp / "cache" / "bundles"),
            "CONNECTOR_OUTPUT": str(self.output),
        }
        self.workers: list[tuple[subprocess.Popen, Path]] = []

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                              capture_output=True, text=True, env={**self.env, **(env or {})},
                              timeout=timeout)

    def deploy(self, path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        r = self.cli("deploy", str(path), *extra, env=env)
        assert r.returncode == 0, r.stderr

    def refresh(self, name: str, tenant: str, *extra: str,
                timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], dict]:
        r = self.cli("refresh", name, "--tenant", tenant, "--queue", "--wait", "--json",
                     *extra, timeout=timeout)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        return r, (json.loads(lines[-1]) if lines else {})

    def start(self, name: str, tenant: str) -> str:
        r = self.cli("refresh", name, "--tenant", tenant, "--queue")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().splitlines()[-1]

    def rows(self, name: str, tenant: str) -> list[dict]:
        r = self.cli("show", name, "--tenant", tenant, "--jsonl", "--limit", "100000000")
        assert r.returncode == 0, r.stderr
        return [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]

    def start_workers(self, concurrency: int = 1, *extra: str,
                      env: dict[str, str] | None = None) -> subprocess.Popen:
        """Worker processes in their own process group (so a test can kill them all)."""
        log = self.tmp / f"worker-{len(self.workers)}.log"
        p = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--concurrency",
                              str(concurrency), *extra], cwd=ROOT,
                             env={**self.env, **(env or {})}, stdout=log.open("w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append((p, log))
        return p

    def kill(self, p: subprocess.Popen, sig: int = 9) -> None:
        import contextlib
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.Signals(sig))
        p.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.workers)

    def stop(self) -> None:
        import contextlib
        import signal

        for p, _ in self.workers:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p, _ in self.workers:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(p)


@pytest.fixture
def queue_env(tmp_path: Path, redis_prefix) -> QueueEnv:
    q = QueueEnv(tmp_path, redis_prefix)
    yield q
    q.stop()
