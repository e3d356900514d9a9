"""The hostile-code suite: connectors that attack the Docker sandbox, against a real engine.

Every attack is a fragment of a connector refreshed by the real CLI, next to fragments
that behave: the attack must be contained (the host and other connectors' data are
untouched, no secret is obtained: a probing fragment reports what it got as a row and
the test asserts the row shows failure or absence), fail with a clear reason where it
should, leave the worker alive (exit 1, not a crash), and let the well-behaved
fragments of the same run commit. The suite runs under runc and under gVisor (runsc).

To keep it fast, attacks are grouped: one refresh per group and runtime (a module
fixture), then one test per attack asserting on that refresh's summary, rows and
messages. Connector code is constant (no random values), so images are built once and
reused; per-run values (paths, addresses, ports) reach the code as credentials.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.conftest import Cli, write_connector
from tests.helpers.peak import Run, run_cli
from worker.sandbox.docker import LABEL

pytestmark = pytest.mark.docker

RUNTIMES = ["runc", "runsc"]
# The timeout that the CPU spin runs into. gVisor (ptrace platform) starts and imports
# several times slower, and session start shares the same deadline.
TIMEOUT = {"runc": 5, "runsc": 12}
# Under gVisor's ptrace platform the sentry's own host threads and stub processes count
# against the container's pids limit: at 64 even a double fork kills the sandbox, so
# gVisor runs the limits group at the default (128).
PIDS = {"runc": 64, "runsc": 128}


# --------------------------------------------------------------------------- helpers


def rows(output: Path, path: Path) -> list[dict]:
    return Cli(output).rows(path)


def sandbox_containers(names: set[str]) -> list[str]:
    """Sandbox containers (any state) of the given connector names."""
    client = docker.from_env()
    found = client.api.containers(all=True, filters={"label": LABEL})
    return [c["Id"][:12] for c in found
            if (c.get("Labels") or {}).get("io.connector.name") in names]


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge (`docker network inspect bridge`)."""
    from worker.sandbox.egress import network_gateway

    return network_gateway(docker.from_env(), "bridge")


class Listener:
    """A TCP server on the host that records every connection it accepts."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ----------------------------------------------------------- group 1: resource limits
#
# A failed fragment stops the refresh from starting new ones (running ones finish), so
# each attack gets its own refresh: two well-behaved fragments listed first, the attack
# last, one lane. The refreshes of all attacks run at once, as separate CLI processes
# with separate outputs, from one connector (one image); the attack is picked by the
# credentials, which is also how per-run values reach every probe below.

LIMITS_CODE = r"""
import json, os, signal, time

def context(credentials):
    return json.loads(credentials)

ATTACKS = ["fork_bomb", "memory_bomb", "cpu_spin", "kill_self", "output_cap", "background"]

def list_objects(ctx, meta):
    # The attack arrives as an index: credentials' string values are redacted from
    # every message, and the attack's name is in the messages the tests compare.
    for name in ("a_ok", "b_ok", "z_" + ATTACKS[ctx["attack"]]):
        yield {"name": name, "fingerprint": "1"}

def read_bytes(ctx, meta):
    name = meta["name"]
    yield "frag,n\n"
    if name == "z_fork_bomb":
        me = os.getpid()
        try:
            while True:
                os.fork()      # parent and every child keep forking
        except OSError:
            if os.getpid() != me:
                time.sleep(3600)   # a parked child: dies with its container
                os._exit(0)
            raise                  # the runtime's process reports the failure
    elif name == "z_memory_bomb":
        hog = []
        while True:
            hog.append(b"\x01" * (32 << 20))   # written, so resident
    elif name == "z_cpu_spin":
        while True:
            pass
    elif name == "z_kill_self":
        yield "kill_self,1\n" * 1000
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
    elif name == "z_output_cap":
        for i in range(40):
            yield "".join(f"output_cap,{i * 10000 + j}\n" for j in range(10000))
    elif name == "z_background":
        pid = os.fork()
        if pid == 0:               # double fork + setsid: a daemon that outlives us
            os.setsid()
            if os.fork() == 0:
                time.sleep(100000)
            os._exit(0)
        os.waitpid(pid, 0)
    yield f"{name},1\n"
"""

ATTACKS = ["fork_bomb", "memory_bomb", "cpu_spin", "kill_self", "output_cap", "background"]


def attack_connector(folder: Path, code: str, name: str, config: dict, extra: str = "") -> Path:
    """A connector whose per-run settings arrive as credentials (not in its image)."""
    return write_connector(folder, code, f"name: {name}\ncredentials: {{file: config.json}}\n"
                           + extra, files={"config.json": json.dumps(config)})


def run_parallel(jobs: dict[str, tuple[Path, list[str], dict[str, str] | None]]
                 ) -> dict[str, Run]:
    """{key: (output, cli args, env)} -> {key: Run}, all CLI processes at once."""
    runs: dict[str, Run] = {}

    def go(key: str) -> None:
        output, args, env = jobs[key]
        runs[key] = run_cli(output, *args, env=env)

    threads = [threading.Thread(target=go, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs


@dataclass
class AttackRuns:
    name: str
    runs: dict[str, Run]
    rows: dict[str, list[dict]]


@pytest.fixture(scope="module")
def limits_runs(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> AttackRuns:
    tmp = tmp_path_factory.mktemp(f"limits-{runtime}")
    name = f"hostile_limits_{runtime}"
    limits = (f"limits: {{memory: 256m, timeout: {TIMEOUT[runtime]}, pids: {PIDS[runtime]}, "
              f"max_output_bytes: 1m, runtime: {runtime}}}\n")
    paths = {a: attack_connector(tmp / a / name, LIMITS_CODE, name,
                                 {"attack": ATTACKS.index(a)}, limits) for a in ATTACKS}
    runs = run_parallel({a: (tmp / a / "out", ["refresh", str(paths[a]), "--json",
                                               "--sandbox", "docker", "--concurrency", "1"],
                             None) for a in ATTACKS})
    got = {a: rows(tmp / a / "out", paths[a]) for a in ATTACKS}
    return AttackRuns(name, runs, got)


def assert_contained(attacks: AttackRuns, attack: str, message: str | None) -> Run:
    """The worker exited 1 (0 if `message` is None), not crashed; the attack's fragment
    failed with exactly `message`; the good fragments committed; no container is left."""
    run = attacks.runs[attack]
    assert run.returncode == (0 if message is None else 1), run.stderr
    assert run.stderr.count("Traceback") <= 1, run.stderr  # the user's, if any
    assert run.failure(f"z_{attack}") == (message or ""), run.stderr
    assert run.summary["read"] == (3 if message is None else 2), run.summary
    frags = sorted(r["frag"] for r in attacks.rows[attack])
    assert frags[:2] == ["a_ok", "b_ok"], attacks.rows[attack]
    assert not sandbox_containers({attacks.name})  # all runs of the fixture ended
    return run


def test_fork_bomb_hits_pids_limit(limits_runs, runtime):
    run = limits_runs.runs["fork_bomb"]
    msg = run.failure("z_fork_bomb")
    if runtime == "runc":
        # fork() fails with EAGAIN at the pids limit; user code sees it and fails
        assert msg.startswith("(user) read_bytes('z_fork_bomb') raised BlockingIOError: "
                              "[Errno 11] Resource temporarily unavailable"), run.stderr
    else:
        # under gVisor (ptrace platform) every sandboxed process costs host processes and
        # memory: the sentry runs out of pids or the sandbox of memory first, and the
        # whole sandbox dies (which one wins varies from run to run)
        assert msg in ("(user) container exited 2: the gVisor sandbox died (a fork bomb or "
                       f"too many threads for the pids limit of {PIDS[runtime]} does this)",
                       "(limit) out of memory (limit 256 MiB)"), run.stderr
    assert_contained(limits_runs, "fork_bomb", msg)


def test_memory_bomb_is_oom_killed(limits_runs, runtime):
    run = limits_runs.runs["memory_bomb"]
    msg = run.failure("z_memory_bomb")
    if runtime == "runsc" and msg == "(user) container exited 137":
        # gVisor: the kernel's OOM killer sometimes hits the sentry in a way Docker does
        # not flag as OOMKilled; contained, but reported less precisely
        assert_contained(limits_runs, "memory_bomb", msg)
        return
    assert_contained(limits_runs, "memory_bomb", "(limit) out of memory (limit 256 MiB)")


def test_cpu_spin_times_out(limits_runs, runtime):
    run = assert_contained(limits_runs, "cpu_spin",
                           f"(limit) timed out after {TIMEOUT[runtime]} s")
    # killed at the deadline, not left to spin: the refresh ends soon after it
    assert run.seconds < TIMEOUT[runtime] + 60


def test_killing_itself_mid_stream(limits_runs):
    assert_contained(limits_runs, "kill_self", "(user) container exited 137")


def test_output_cap(limits_runs):
    assert_contained(limits_runs, "output_cap", "(limit) output exceeded 1 MiB")


def test_background_processes_do_not_outlive_the_refresh(limits_runs):
    assert_contained(limits_runs, "background", None)
    assert {"frag": "z_background", "n": "1", "_fragment": "z_background"} in \
        limits_runs.rows["background"]
    # the daemonized grandchild died with its container, which is gone; so are the
    # containers of every other attack (the spinning one, the fork bomb's parked children)
    assert not sandbox_containers({limits_runs.name})


# -------------------------------------------- group 2: probes of the sandbox's walls

PROBE_CODE = r'''
import ctypes, errno, json, os, socket, stat, subprocess

PROBES = ["fs_write", "fill_tmp", "noexec_tmp", "network", "host_files", "host_proc",
          "docker_socket", "environ", "privileges", "setuid_binaries", "syscalls",
          "zz_write_code"]

def context(credentials):
    return json.loads(credentials)

def list_objects(ctx, meta):
    for name in PROBES:
        yield {"name": name, "fingerprint": "1"}

def err(e):
    return errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return err(e)

def write(path, mode="w"):
    def fn():
        with open(path, mode) as f:
            f.write("pwned")
    return fn

def fill(path):
    n, why = 0, "ok"
    try:
        with open(path, "wb") as f:
            chunk = b"\0" * (1 << 20)
            while n < (512 << 20):
                f.write(chunk)
                f.flush()
                n += len(chunk)
    except OSError as e:
        why = err(e)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"bytes": n, "error": why}

def fs_write(ctx):
    return {"/": attempt(write("/evil")),
            "/opt/connector": attempt(write("/opt/connector/evil")),
            "connector.py": attempt(write("/opt/connector/connector.py", "a")),
            "/etc/passwd": attempt(write("/etc/passwd", "a")),
            "/var/tmp": attempt(write("/var/tmp/evil")),
            "/tmp": attempt(write("/tmp/fine"))}

def fill_tmp(ctx):
    return {"/tmp": fill("/tmp/fill"), "/dev/shm": fill("/dev/shm/fill")}

def noexec_tmp(ctx):
    out = {}
    for d in ("/tmp", "/dev/shm"):
        p = d + "/x.sh"
        with open(p, "w") as f:
            f.write("#!/bin/sh\necho pwned\n")
        os.chmod(p, 0o755)
        out[d] = attempt(lambda: subprocess.run([p], check=True, capture_output=True))
        os.unlink(p)
    return out

def network(ctx):
    out = {"interfaces": sorted(n for _, n in socket.if_nameindex())}
    for label, host in (("gateway", ctx["gateway"]), ("loopback", "127.0.0.1")):
        s = socket.socket()
        s.settimeout(3)
        out["tcp_" + label] = attempt(lambda: s.connect((host, ctx["port"])))
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out["udp_gateway"] = attempt(lambda: u.sendto(b"x", (ctx["gateway"], ctx["port"])))
    u.close()
    out["raw_icmp"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                    socket.IPPROTO_ICMP).close())
    out["packet"] = attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
    return out

def host_files(ctx):
    marker = ctx["marker_path"]
    got = {}
    for p in (marker, "/proc/1/root" + marker, "/etc/shadow"):
        try:
            with open(p) as f:
                got[p] = "READ:" + f.read()
        except OSError as e:
            got[p] = err(e)
    got["root_entries"] = sorted(os.listdir("/"))
    return got

def host_proc(ctx):
    cmdlines = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdlines[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError as e:
                cmdlines[pid] = err(e)
    return cmdlines

def docker_socket(ctx):
    out = {}
    for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
        s = socket.socket(socket.AF_UNIX)
        out[p] = attempt(lambda: s.connect(p))
        s.close()
    return out

def environ(ctx):
    out = {"os.environ": dict(os.environ)}
    for pid in os.listdir("/proc"):
        if pid.isdigit() or pid == "self":
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    out[pid] = f.read().decode(errors="replace")
            except OSError as e:
                out[pid] = err(e)
    return out

def privileges(ctx):
    libc = ctypes.CDLL(None, use_errno=True)
    def c(fn, *args):
        r = fn(*args)
        return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(r))
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/tmp/mine", "w"):
        pass
    out = {k: status.get(k, "").strip() for k in
           ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
    out["setuid"] = attempt(lambda: os.setuid(0))
    out["setgid"] = attempt(lambda: os.setgid(0))
    out["setgroups"] = attempt(lambda: os.setgroups([0]))
    out["chown"] = attempt(lambda: os.chown("/tmp/mine", 0, 0))
    out["mknod"] = attempt(lambda: os.mknod("/tmp/mem", stat.S_IFCHR | 0o600,
                                            os.makedev(1, 1)))   # /dev/mem
    out["open_mem"] = attempt(lambda: open("/tmp/mem", "rb").close()) \
        if out["mknod"] == "ok" else "-"
    os.makedirs("/tmp/mnt", exist_ok=True)
    out["mount"] = c(libc.mount, b"none", b"/tmp/mnt", b"tmpfs", 0, None)
    # PTRACE_ATTACH to PID 1 (Docker's init). If the kernel allows it (same uid), it
    # must not be worth anything: report PID 1's privileges, then detach at once.
    r = libc.ptrace(16, 1, None, None)
    out["ptrace_pid1"] = "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    if r == 0:
        os.waitpid(1, 0x40000000)  # __WALL: wait for the stop
        libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
    with open("/proc/1/status") as f:
        st1 = dict(line.split(":", 1) for line in f if ":" in line)
    out["pid1"] = {k: st1.get(k, "").strip() for k in ("Name", "Uid", "CapEff")}
    # Last: in a new user namespace (gVisor allows one) other uids read as unmapped.
    out["unshare_user"] = c(libc.unshare, 0x10000000)   # CLONE_NEWUSER
    out["unshare_mount"] = c(libc.unshare, 0x00020000)  # CLONE_NEWNS
    out["mount_after_unshare"] = c(libc.mount, b"none", b"/tmp/mnt", b"tmpfs", 0, None)
    return out

def setuid_binaries(ctx):
    out = {}
    for cmd in (["su", "-c", "id -u", "root"], ["mount", "-t", "tmpfs", "none", "/tmp"],
                ["chsh", "-s", "/bin/sh", "root"]):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                               stdin=subprocess.DEVNULL)
            out[cmd[0]] = {"rc": p.returncode, "out": p.stdout.strip(),
                           "err": p.stderr.strip()[-200:]}
        except (OSError, subprocess.TimeoutExpired) as e:
            out[cmd[0]] = {"rc": -1, "out": "", "err": type(e).__name__}
    return out

def syscalls(ctx):
    libc = ctypes.CDLL(None, use_errno=True)
    def c(r):
        return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(r))
    params = ctypes.create_string_buffer(120)     # struct io_uring_params, zeroed
    out = {"io_uring_setup": c(libc.syscall(425, 8, params))}
    out["ptrace_traceme"] = c(libc.ptrace(0, 0, None, None))   # PTRACE_TRACEME
    return out

def zz_write_code(ctx):
    with open("/opt/connector/connector.py", "a") as f:   # raises: read-only code
        f.write("\nprint('pwned')\n")

def read_bytes(ctx, meta):
    result = globals()[meta["name"]](ctx)
    yield json.dumps({"probe": meta["name"], "result": json.dumps(result)}) + "\n"
'''

WORKER_SECRETS = {"REDIS_URL": "redis://:hunter2-redis-pw@127.0.0.1:6390/0",
                  "CONNECTOR_SECRET_KEY": "sk-worker-secret-4f1c2b"}


@dataclass
class ProbeRun:
    run: Run
    results: dict[str, dict]
    path: Path
    code_before: str
    marker_path: Path
    marker_text: str
    host_marker_arg: str
    listener_accepted: list[tuple[str, int]]


@pytest.fixture(scope="module")
def probe_run(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeRun]:
    tmp = tmp_path_factory.mktemp(f"probe-{runtime}")
    marker_text = "host-only-" + secrets.token_hex(8)
    marker_path = tmp / "host-marker.txt"
    marker_path.write_text(marker_text)
    host_marker_arg = "hostile-host-process-" + secrets.token_hex(8)
    host_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                  host_marker_arg])
    gateway = bridge_gateway()
    listener = Listener(gateway)
    config = {"gateway": gateway, "port": listener.port, "marker_path": str(marker_path)}
    name = f"hostile_probe_{runtime}"
    path = write_connector(tmp / name, PROBE_CODE, f"""
        name: {name}
        parser: {{format: json}}
        credentials: {{file: config.json}}
        limits: {{timeout: 60, runtime: {runtime}}}
        """, files={"config.json": json.dumps(config)})
    code_before = (path / "connector.py").read_text()
    try:
        run = run_cli(tmp / "out", "refresh", str(path), "--json", "--sandbox", "docker",
                      "--concurrency", "4", env=WORKER_SECRETS)
        got = {r["probe"]: json.loads(r["result"]) for r in rows(tmp / "out", path)}
    finally:
        host_proc.kill()
        host_proc.wait()
        listener.close()
    yield ProbeRun(run, got, path, code_before, marker_path, marker_text, host_marker_arg,
                   listener.accepted)


def test_probes_commit_and_code_write_fails(probe_run):
    p = probe_run
    assert p.run.returncode == 1, p.run.stderr
    s = p.run.summary
    assert (s["listed"], s["read"], s["failed"]) == (12, 11, 1), p.run.stderr
    msg = p.run.failure("zz_write_code")
    assert msg.startswith("(user) read_bytes('zz_write_code') raised"), p.run.stderr
    assert "Read-only file system" in msg or "Permission denied" in msg
    assert (p.path / "connector.py").read_text() == p.code_before  # host copy untouched
    assert not sandbox_containers({p.path.name})


def test_writing_to_root_and_code_fails(probe_run):
    r = probe_run.results["fs_write"]
    for where in ("/", "/opt/connector", "connector.py", "/etc/passwd", "/var/tmp"):
        assert r[where] in ("EROFS", "EACCES"), (where, r)
    assert r["/tmp"] == "ok"


def test_filling_tmp_stops_at_tmpfs_size(probe_run):
    r = probe_run.results["fill_tmp"]
    for where in ("/tmp", "/dev/shm"):
        assert r[where]["error"] == "ENOSPC", r
        assert r[where]["bytes"] <= 64 << 20, r


def test_tmp_is_noexec(probe_run):
    assert probe_run.results["noexec_tmp"] == {"/tmp": "EACCES", "/dev/shm": "EACCES"}


def test_no_network(probe_run):
    r = probe_run.results["network"]
    assert r["interfaces"] == ["lo"], r
    assert r["tcp_gateway"] in ("ENETUNREACH", "EHOSTUNREACH"), r
    assert r["tcp_loopback"] == "ECONNREFUSED", r  # its own lo, not the host's
    assert r["udp_gateway"] in ("ENETUNREACH", "EHOSTUNREACH"), r
    assert r["raw_icmp"] == "EPERM" and r["packet"] == "EPERM", r
    assert probe_run.listener_accepted == []


def test_host_files_not_visible(probe_run):
    p = probe_run
    r = p.results["host_files"]
    assert r[str(p.marker_path)] == "ENOENT"
    assert r["/proc/1/root" + str(p.marker_path)] in ("ENOENT", "EACCES")
    assert r["/etc/shadow"] == "EACCES"  # the image's, and not readable as uid 10001
    assert p.marker_text not in json.dumps(p.results)
    assert "work" not in r["root_entries"]  # not the host's / (this repo is /work/...)


def test_host_processes_not_visible(probe_run):
    p = probe_run
    cmdlines = p.results["host_proc"]
    assert p.host_marker_arg not in json.dumps(cmdlines)
    assert "pytest" not in json.dumps(cmdlines) and "dockerd" not in json.dumps(cmdlines)
    assert len(cmdlines) <= 8, cmdlines  # init, the runtime, and this probe's children


def test_docker_socket_absent(probe_run):
    for path, result in probe_run.results["docker_socket"].items():
        assert result == "ENOENT", (path, result)


def test_worker_environment_not_visible(probe_run):
    r = probe_run.results["environ"]
    dumped = json.dumps(r)
    for key, value in WORKER_SECRETS.items():
        assert key not in dumped and value not in dumped
    assert "hunter2" not in dumped
    assert set(r["os.environ"]) <= {"PATH", "HOSTNAME", "HOME", "TMPDIR", "LANG", "PYTHONPATH",
                                    "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}
    # the credentials (this probe's config) are not in any environment either
    assert str(probe_run.marker_path) not in dumped


def test_no_privilege_escalation(probe_run, runtime):
    r = probe_run.results["privileges"]
    assert r["Uid"].split() == ["10001"] * 4 and r["Gid"].split() == ["10001"] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(r[cap] or "0", 16) == 0, (cap, r)
    for op in ("setuid", "setgid", "setgroups", "chown", "mount", "mount_after_unshare"):
        assert r[op] == "EPERM", (op, r)
    # no user namespace to become "root" in under runc. gVisor lets a single-threaded
    # process (the user process is one) make one inside its sentry (EINVAL only for a
    # threaded caller), and, as with the mount namespace, it still cannot mount
    assert r["unshare_user"] in (("EPERM",) if runtime == "runc" else ("EINVAL", "ok")), r
    assert r["unshare_mount"] == ("EPERM" if runtime == "runc" else "ok"), r
    if runtime == "runc":
        assert r["mknod"] == "EPERM", r
    else:
        # gVisor lets anyone mknod in its own tmpfs, but the node leads to the sentry's
        # device table, which has no /dev/mem: nothing of the host is behind it.
        assert r["mknod"] in ("EPERM", "ok") and r["open_mem"] in ("-", "ENXIO"), r
    # Docker's init runs as the same unprivileged user: tracing it gains nothing.
    assert r["ptrace_pid1"] in ("EPERM", "ok"), r
    assert r["pid1"]["Uid"].split()[0] == "10001" and int(r["pid1"]["CapEff"], 16) == 0


# runc only: gVisor's sentry implements these syscalls itself (the host kernel never
# sees them) and applies an OCI seccomp profile only when runsc runs with --oci-seccomp.
@pytest.mark.parametrize("runtime", ["runc"], indirect=True, scope="module")
def test_seccomp_denies_io_uring_and_ptrace(probe_run, runtime):
    # Docker 20.10's default profile allows both; ours does not.
    assert probe_run.results["syscalls"] == {"io_uring_setup": "EPERM",
                                             "ptrace_traceme": "EPERM"}


def test_setuid_binaries_do_not_escalate(probe_run):
    r = probe_run.results["setuid_binaries"]
    for cmd, res in r.items():
        assert res["rc"] != 0, (cmd, res)
        assert res["out"] != "0", (cmd, res)
    assert "must be superuser" in r["mount"]["err"] or "permission denied" in \
        r["mount"]["err"].lower()


# --------------------------------------------- group 3: another connector's secrets

CREDS_CODE = r'''
import hashlib, json, os, re, time

TOKEN = re.compile(rb"CRED-[AB]-[0-9a-f]{16}")

def context(credentials):
    return {"creds": credentials.strip()}

def list_objects(ctx, meta):
    for i in range(3):
        yield {"name": f"f{i}", "fingerprint": "1"}

def scan(path, found):
    try:
        if os.path.getsize(path) > (4 << 20):
            return
        with open(path, "rb") as f:
            found.update(t.decode() for t in TOKEN.findall(f.read()))
    except OSError:
        pass

def read_bytes(ctx, meta):
    time.sleep(1.5)  # overlap with the other connector's containers
    found = set()
    for top in ("/tmp", "/opt", "/etc", "/home", "/root", "/run", "/var", "/dev/shm"):
        for d, dirs, files in os.walk(top):
            for f in files:
                scan(os.path.join(d, f), found)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for what in ("environ", "cmdline"):
                scan(f"/proc/{pid}/{what}", found)
    found.update(TOKEN.findall(json.dumps(dict(os.environ)).encode()) and ["ENV"] or [])
    yield json.dumps({"fragment": meta["name"], "creds": ctx["creds"],
                      "found": json.dumps(sorted(found))}) + "\n"
'''


def test_other_connectors_credentials_not_visible(runtime, tmp_path):
    secret = {"a": f"CRED-A-{secrets.token_hex(8)}", "b": f"CRED-B-{secrets.token_hex(8)}"}
    paths = {k: write_connector(tmp_path / f"creds_{k}_{runtime}", CREDS_CODE, f"""
        name: creds_{k}_{runtime}
        parser: {{format: json}}
        credentials: {{file: secret.txt}}
        limits: {{timeout: 60, runtime: {runtime}}}
        """, files={"secret.txt": secret[k]}) for k in secret}
    runs: dict[str, Run] = {}

    def go(k: str) -> None:
        runs[k] = run_cli(tmp_path / "out", "refresh", str(paths[k]), "--json",
                          "--sandbox", "docker", "--concurrency", "2")

    threads = [threading.Thread(target=go, args=(k,)) for k in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, other in (("a", "b"), ("b", "a")):
        assert runs[k].returncode == 0, runs[k].stderr
        got = rows(tmp_path / "out", paths[k])
        assert len(got) == 3
        for row in got:
            assert row["creds"] == secret[k]          # its own, via context()
            found = json.loads(row["found"])
            assert secret[other] not in found, row    # never the other's
            assert "ENV" not in found
            assert set(found) <= {secret[k]}          # own secret only in memory/stdin
    assert not sandbox_containers({p.name for p in paths.values()})


# --------------------------------------------------- group 4: floods and forged frames

# The start of a connector whose fragments the test names in its credentials; each
# group appends its own read_bytes body.
NAMED_FRAGMENTS = r"""
import json, os, signal, sys, time

def context(credentials):
    return json.loads(credentials)

def list_objects(ctx, meta):
    for name in ctx["fragments"]:
        yield {"name": name, "fingerprint": "1"}

def read_bytes(ctx, meta):
    name = meta["name"]
    yield "frag,n\n"
"""

FLOOD_CODE = NAMED_FRAGMENTS + r"""
    if name == "b_flood_small":        # 8 MiB of log: under the output cap
        line = "x" * 1023 + "\n"
        for i in range(4096):
            sys.stdout.write(line)
            sys.stderr.write(line)
    elif name == "z_flood_big":        # 512 MiB of log: far over it
        block = ("y" * 1023 + "\n") * 1024
        for i in range(256):
            print(block, end="")
            sys.stderr.write(block)
    elif name == "z_forged_frame":
        # Write straight to the protocol's descriptor (a dup of the original stdout):
        # a header announcing a 500 MiB Arrow frame, then the bytes to fill it.
        header = b"A" + (500 << 20).to_bytes(4, "big")
        fd = None
        for cand in range(3, 256):
            try:
                os.write(cand, header)
                fd = cand
                break
            except OSError:
                continue
        chunk = b"\0" * (1 << 20)
        for _ in range(520):
            os.write(fd, chunk)
    yield f"{name},1\n"
"""

FLOODS = {"flood": ["a_ok", "b_flood_small", "z_flood_big"],
          "forged": ["a_ok", "z_forged_frame"]}


@pytest.fixture(scope="module")
def flood_runs(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> AttackRuns:
    tmp = tmp_path_factory.mktemp(f"flood-{runtime}")
    name = f"hostile_flood_{runtime}"
    limits = f"limits: {{timeout: 120, max_output_bytes: 16m, runtime: {runtime}}}\n"
    paths = {k: attack_connector(tmp / k / name, FLOOD_CODE, name, {"fragments": frags},
                                 limits) for k, frags in FLOODS.items()}
    runs = run_parallel({k: (tmp / k / "out", ["refresh", str(paths[k]), "--json",
                                               "--sandbox", "docker", "--concurrency", "1"],
                             None) for k in FLOODS})
    return AttackRuns(name, runs, {k: rows(tmp / k / "out", paths[k]) for k in FLOODS})


# The CLI alone (pyarrow, docker, pydantic) peaks around 150-200 MiB; a 500 MiB frame
# or an unbounded log would push it far past this.
WORKER_RSS_CAP_MIB = 400


def test_flooding_stdout_and_stderr(flood_runs):
    run, got = flood_runs.runs["flood"], flood_runs.rows["flood"]
    assert run.returncode == 1, run.stderr
    assert sorted(r["frag"] for r in got) == ["a_ok", "b_flood_small"]
    assert run.failure("z_flood_big") == "(limit) output exceeded 16 MiB", run.stderr
    # the failure's log is bounded (head and tail kept, the middle dropped)
    log = run.stderr.split("fragment 'z_flood_big' failed", 1)[1]
    assert len(log) < 16 << 10
    assert run.maxrss_mib < WORKER_RSS_CAP_MIB, run.maxrss_mib
    assert not sandbox_containers({flood_runs.name})


def test_forged_giant_frame_is_not_buffered(flood_runs):
    run, got = flood_runs.runs["forged"], flood_runs.rows["forged"]
    assert run.returncode == 1, run.stderr
    msg = run.failure("z_forged_frame")
    # User code no longer holds a descriptor of the host's protocol: its forgery lands
    # in its own pipe to the runtime, which refuses it from its header alone (the 500 MiB
    # are never buffered) and ends the session
    assert msg.startswith("(user) the connector's process broke the runtime's protocol: "
                          "a frame of 524288000 bytes"), run.stderr
    assert run.maxrss_mib < WORKER_RSS_CAP_MIB, run.maxrss_mib
    assert [r["frag"] for r in got] == ["a_ok"]


# -------------------------------- group 5: printing mid-stream, sessions after a crash

MID_CODE = NAMED_FRAGMENTS + r"""
    yield f"{name},1\n"
    if name == "a_print_mid":
        print("PRINTED-MID-STREAM")
        sys.stdout.buffer.write(b'J\x00\x00\x00\x0d{"op":"done"}\n')  # a fake frame
        sys.stdout.flush()
        os.write(1, b"RAW-FD1-WRITE\n")
        print("STDERR-MID-STREAM", file=sys.stderr)
        yield f"{name},2\n"
        print("A" * 100000)
        yield f"{name},3\n"
    elif name == "b_kill_self":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
"""


@pytest.fixture(scope="module")
def mid_runs(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> AttackRuns:
    tmp = tmp_path_factory.mktemp(f"mid-{runtime}")
    name = f"hostile_mid_{runtime}"
    limits = f"limits: {{timeout: 60, runtime: {runtime}}}\n"
    # `connector test` reads in listing order and replaces a broken session; a refresh
    # stops starting fragments after a failure, so there the killer is listed last.
    orders = {"test": ["a_print_mid", "b_kill_self", "c_after"],
              "refresh": ["a_print_mid", "c_after", "b_kill_self"]}
    paths = {k: attack_connector(tmp / k / name, MID_CODE, name, {"fragments": o}, limits)
             for k, o in orders.items()}
    runs = run_parallel({
        "test": (tmp / "test" / "out", ["test", str(paths["test"]), "--sandbox", "docker",
                                        "--limit", "3"], None),
        "refresh": (tmp / "refresh" / "out", ["refresh", str(paths["refresh"]), "--json",
                                              "--sandbox", "docker", "--concurrency", "1"],
                    None)})
    return AttackRuns(name, runs, {"refresh": rows(tmp / "refresh" / "out",
                                                   paths["refresh"])})


def test_printing_mid_stream_does_not_corrupt_the_protocol(mid_runs):
    got = mid_runs.rows["refresh"]
    assert sorted(r["n"] for r in got if r["frag"] == "a_print_mid") == ["1", "2", "3"]
    out = mid_runs.runs["test"].stdout
    assert "a_print_mid: 3 row(s)" in out, out
    log = out.split("log of a_print_mid:", 1)[1]
    for text in ("PRINTED-MID-STREAM", '{"op":"done"}', "RAW-FD1-WRITE",
                 "STDERR-MID-STREAM"):
        assert text in log, out


def test_session_replaced_after_the_runtime_killed_itself(mid_runs):
    test_run, refresh = mid_runs.runs["test"], mid_runs.runs["refresh"]
    # `connector test` reads the three in a row on one warm session: the kill breaks
    # it, a new one is started, and the next fragment reads normally.
    assert test_run.returncode == 1, test_run.stderr
    assert "b_kill_self failed (user): container exited 137" in test_run.stderr
    assert "c_after: 1 row(s)" in test_run.stdout, test_run.stdout
    # in a refresh the fragments before it commit
    assert refresh.returncode == 1, refresh.stderr
    assert refresh.failure("b_kill_self") == "(user) container exited 137"
    assert sorted({r["frag"] for r in mid_runs.rows["refresh"]}) == ["a_print_mid", "c_after"]
    assert not sandbox_containers({mid_runs.name})


# ------------------------------ group 5: queue mode, tenant against tenant and worker
#
# The attacker is tenant `acme-orders`, deploying through the real CLI to workers that
# run its code in Docker. The victim is tenant `acme`, whose connector `orders-daily`
# has sealed credentials and a schedule. What the attacker controls: its spec, its
# folder, its code, and (as a forged or stale deployment record) its stored
# credentials reference. What it must never get: the victim's schedule, image, rows or
# credentials, the worker's Fernet key, environment or files, or limits above its
# ceilings.

QUEUE_PROBE_CODE = r'''
import json, os

def context(credentials):
    return credentials

def list_objects(ctx, meta):
    yield {"name": "probe", "fingerprint": "1"}

def attempt(path):
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "replace")
    except OSError as e:
        return type(e).__name__

def read_bytes(ctx, meta):
    paths = json.loads(ctx)["paths"]
    got = {p: attempt(p) for p in paths}
    got["env"] = json.dumps(dict(os.environ))
    got["creds"] = ctx
    yield json.dumps({"got": json.dumps(got)}) + "\n"
'''


def test_queue_mode_tenant_attacks(queue_env, redis_client, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from worker.registry import StoredCredentials, get_deployment
    from worker.state import keys

    key = Fernet.generate_key().decode()
    victim_secret = f"VICTIM-{secrets.token_hex(8)}"
    worker_secret = f"WORKER-{secrets.token_hex(8)}"
    creds_dir = tmp_path / "creds"
    victim_file = creds_dir / "acme" / "orders-daily" / "token.txt"
    victim_file.parent.mkdir(parents=True)
    victim_file.write_text(victim_secret)
    evil_dir = creds_dir / "acme-orders" / "daily"
    evil_dir.mkdir(parents=True)
    (evil_dir / "token.txt").write_text(json.dumps(
        {"paths": [str(victim_file), "/proc/1/environ", str(creds_dir)]}))
    (evil_dir / "link.txt").symlink_to(victim_file)
    queue_env.env.update({"CONNECTOR_SANDBOX": "docker", "CONNECTOR_SECRET_KEY": key,
                          "CONNECTOR_RETRY_INTERVALS": "1,1,1"})

    victim = write_connector(tmp_path / "victim", QUEUE_PROBE_CODE, """
        name: orders-daily
        tenant: acme
        parser: {format: json}
        credentials: {file: secret.json}
        schedule: {every: 1h}
        limits: {timeout: 60}
        """, files={"secret.json": json.dumps({"paths": [], "secret": victim_secret})})
    evil = write_connector(tmp_path / "evil", QUEUE_PROBE_CODE, """
        name: daily
        tenant: acme-orders
        parser: {format: json}
        credentials: {file: token.txt}
        schedule: {every: 1h}
        limits: {timeout: 60}
        """)
    queue_env.deploy(victim)
    queue_env.deploy(evil, "--credentials-ref")

    # tenant -> tenant: names that a '-' join confuses keep separate schedules
    rq = queue_env.env["RQ_KEY_PREFIX"]
    for tenant in ("acme", "acme-orders"):
        assert redis_client.zcard(f"{rq}:scheduled:{keys.tenant_queue(tenant)}") == 1, tenant

    # tenant -> worker: limits above the operator's ceilings are refused at deploy
    greedy = write_connector(tmp_path / "greedy", QUEUE_PROBE_CODE, """
        name: greedy
        tenant: acme-orders
        parser: {format: json}
        limits: {memory: 1t, pids: 4000000, timeout: .inf}
        """)
    r = queue_env.cli("deploy", str(greedy))
    assert r.returncode == 2 and "limits.timeout: Input should be a finite number" in r.stderr

    queue_env.start_workers(1, env={"CONNECTOR_CREDENTIALS_DIR": str(creds_dir),
                                    "WORKER_ONLY_SECRET": worker_secret})
    secrets_ = (victim_secret, worker_secret, key)

    def leaked(text: str) -> list[str]:
        return [s for s in secrets_ if s in text]

    # the attacker's code, in its container, looks for the victim's file, the
    # worker's environment and the credentials directory: none is there
    r, s = queue_env.refresh("daily", "acme-orders")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    (row,) = queue_env.rows("daily", "acme-orders")
    got = json.loads(row["got"])
    assert got[str(victim_file)] == "FileNotFoundError"
    assert got[str(creds_dir)] in ("FileNotFoundError", "IsADirectoryError")
    assert not leaked(row["got"])

    # its stored reference, forged to point at the worker's secrets or the victim's
    # file: refused on the worker as the attacker's own error
    k = keys.ConnectorKeys("acme-orders", "daily")
    forged = {
        "worker key": StoredCredentials(env="CONNECTOR_SECRET_KEY"),
        "worker env": StoredCredentials(env="WORKER_ONLY_SECRET"),
        "worker environ": StoredCredentials(file="/proc/self/environ"),
        "other tenant": StoredCredentials(file="../../acme/orders-daily/token.txt"),
        "link to other tenant": StoredCredentials(file="link.txt"),
    }
    for i, (attack, stored) in enumerate(forged.items()):
        # a new version first, so no warm session opened with honest credentials is used
        (evil / f"v{i}.txt").write_text(attack)
        queue_env.deploy(evil, "--credentials-ref")
        d = get_deployment(redis_client, "acme-orders", "daily")
        redis_client.set(k.deployment, d.model_copy(update={"credentials": stored})
                         .model_dump_json(by_alias=True))
        r, s = queue_env.refresh("daily", "acme-orders")
        assert r.returncode == 1, (attack, r.stdout, r.stderr)
        assert "failed (user)" in r.stderr, (attack, r.stderr)
        rows_ = queue_env.cli("show", "daily", "--tenant", "acme-orders", "--jsonl").stdout
        assert not leaked(r.stdout + r.stderr + rows_ + queue_env.logs()), attack

    # the victim is untouched: its own rows, its own image repository
    r, s = queue_env.refresh("orders-daily", "acme")
    assert r.returncode == 0, r.stderr + queue_env.logs()
    (row,) = queue_env.rows("orders-daily", "acme")
    assert json.loads(json.loads(row["got"])["creds"])["secret"] == victim_secret
    repos = {t.split(":")[0] for img in docker.from_env().images.list(
        filters={"label": "io.connector.tenant"}) for t in img.tags}
    assert {"connector-acme--orders-daily", "connector-acme-orders--daily"} <= repos


# ------------------------------------ group 6: frames forged in every phase, scratch

FORGE_CODE = r"""
import json, os, time

def forge(data):
    for fd in range(3, 64):       # the protocol's descriptor: the first writable one
        try:
            os.write(fd, data)
            return
        except OSError:
            continue

def frame(kind, body):
    return kind + len(body).to_bytes(4, "big") + body

FORGERIES = ["open", "list", "read", "parquet"]

def context(credentials):
    ctx = json.loads(credentials)
    ctx["attack"] = FORGERIES[ctx["attack"]]   # an index: see LIMITS_CODE
    if ctx["attack"] == "open":           # an Arrow frame before 'ready'
        forge(frame(b"A", b"\xff\xff\xff\xff" + b"\0" * 60))
        time.sleep(30)
    return ctx

def list_objects(ctx, meta):
    yield {"name": "a_ok", "fingerprint": "1"}
    if ctx["attack"] == "list":           # garbage where a listing batch belongs
        forge(frame(b"A", b"garbage" * 20))
        time.sleep(30)
    yield {"name": "z_" + ctx["attack"], "fingerprint": "1"}

def read_bytes(ctx, meta):
    name = meta["name"]
    if name == "z_read":                  # a failure dressed up as the platform's
        forge(frame(b"J", json.dumps({"op": "error", "kind": "infra",
                                      "message": "engine on fire"}).encode()))
        time.sleep(30)
    if ctx["attack"] == "parquet":        # z_parquet: 70 MiB of Parquet, more than /tmp
        # written by the test beside this file: connector code has no pyarrow of its own
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, name + ".parquet"), "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        return
    yield json.dumps({"frag": name, "n": "1"}) + "\n"
"""

FORGERIES = ["open", "list", "read", "parquet"]


def write_blob_parquet(path: Path, frag: str, n: int) -> None:
    """n rows, each with 1 MiB of random bytes: Parquet that cannot shrink. Written by a
    child process: Arrow memory kept by this one would count in the peak RSS of every
    CLI forked from it later (the flood tests bound that)."""
    script = (
        "import os, sys, pyarrow as pa, pyarrow.parquet as pq\n"
        "path, frag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "blob = os.urandom(1 << 20)\n"
        "t = pa.table({'frag': [frag] * n, 'n': [str(i) for i in range(n)],"
        " 'blob': [blob] * n})\n"
        "pq.write_table(t, path, compression='none', use_dictionary=False)\n")
    subprocess.run([sys.executable, "-c", script, str(path), frag, str(n)], check=True)


@pytest.fixture(scope="module")
def forge_runs(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> AttackRuns:
    tmp = tmp_path_factory.mktemp(f"forge-{runtime}")
    name = f"hostile_forge_{runtime}"
    limits = f"limits: {{memory: 768m, timeout: 120, runtime: {runtime}}}\n"
    paths = {}
    for a in FORGERIES:
        parser = "parquet" if a == "parquet" else "json"
        paths[a] = attack_connector(tmp / a / name, FORGE_CODE, name,
                                    {"attack": FORGERIES.index(a)},
                                    f"parser: {{format: {parser}}}\n" + limits)
    for frag, n in (("z_parquet", 70), ("a_ok", 1)):
        write_blob_parquet(paths["parquet"] / f"{frag}.parquet", frag, n)
    runs = run_parallel({a: (tmp / a / "out", ["refresh", str(paths[a]), "--json",
                                               "--sandbox", "docker", "--concurrency", "1"],
                             None) for a in FORGERIES})
    # Not the parquet run's rows: 70 MiB of blobs as JSON would swell this process, and
    # every CLI forked after it would report that as its own peak RSS.
    return AttackRuns(name, runs, {a: rows(tmp / a / "out", paths[a]) for a in FORGERIES
                                   if a != "parquet"})


def test_frame_forged_during_open_is_the_users_failure(forge_runs):
    run = forge_runs.runs["open"]
    assert run.returncode == 1, run.stderr
    # The connector's code runs in the user process: what it forges reaches the runtime
    # (never the host), which ends the session as the user's failure.
    assert run.failure(None).startswith(
        "(user) the connector's process broke the runtime's protocol: expected 'ready'"), \
        run.stderr
    assert "Traceback" not in run.stderr


def test_garbage_listing_frame_is_the_users_failure(forge_runs):
    run = forge_runs.runs["list"]
    assert run.returncode == 1, run.stderr
    assert run.failure(None).startswith(
        "(user) the connector's process broke the runtime's protocol: a control frame that "
        "is not JSON"), run.stderr
    assert "Traceback" not in run.stderr


def test_forged_infra_error_is_the_users_failure(forge_runs):
    assert_contained_forgery(forge_runs, "read", "(user) engine on fire")


def test_parquet_fragment_larger_than_tmp_is_read(forge_runs):
    run = forge_runs.runs["parquet"]
    assert run.returncode == 0, run.stderr
    assert (run.summary["read"], run.summary["rows"]) == (2, 71), run.summary


def assert_contained_forgery(attacks: AttackRuns, attack: str, message: str) -> None:
    run = attacks.runs[attack]
    assert run.returncode == 1, run.stderr
    assert run.failure(f"z_{attack}") == message, run.stderr
    assert "Traceback" not in run.stderr
    assert [r["frag"] for r in attacks.rows[attack]] == ["a_ok"]
    assert not sandbox_containers({attacks.name})
