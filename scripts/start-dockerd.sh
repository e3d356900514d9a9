#!/usr/bin/env bash
# Start a Docker engine if none answers. Idempotent: safe to run any number of times.
#
# - If `docker info` answers, exit 0 at once.
# - If Debian's `runsc` (gVisor) package exists, install it and register it in
#   /etc/docker/daemon.json as runtime "runsc" (no network, ptrace platform) BEFORE
#   dockerd starts; a missing package is skipped silently.
# - Start dockerd in the background (log: /tmp/dockerd.log), with the overlay2 storage
#   driver when an overlay mount works here, else let dockerd pick; wait up to 60 s.
set -euo pipefail

LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
DAEMON_JSON=/etc/docker/daemon.json
PIDFILE=/var/run/docker.pid
WAIT=${DOCKERD_WAIT:-60}

answers() { timeout 10 docker info >/dev/null 2>&1; }

if answers; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# --- gVisor (optional) -------------------------------------------------------------
register_runsc() {
    local bin="$1"
    $SUDO mkdir -p /etc/docker
    $SUDO python3 - "$DAEMON_JSON" "$bin" <<'PY'
import json, os, sys
path, binary = sys.argv[1], sys.argv[2]
conf = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read().strip()
    conf = json.loads(text) if text else {}
want = {"path": binary, "runtimeArgs": ["--network=none", "--platform=ptrace"]}
if conf.get("runtimes", {}).get("runsc") != want:
    conf.setdefault("runtimes", {})["runsc"] = want
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(conf, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
PY
}

if ! command -v runsc >/dev/null 2>&1; then
    candidate=$(apt-cache policy runsc 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc \
            >>/tmp/runsc-install.log 2>&1 || true
    fi
fi
if command -v runsc >/dev/null 2>&1; then
    register_runsc "$(command -v runsc)"
fi

# --- storage driver ----------------------------------------------------------------
driver_args=()
configured_driver=""
if [ -f "$DAEMON_JSON" ]; then
    configured_driver=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("storage-driver",""))' \
        "$DAEMON_JSON" 2>/dev/null || true)
fi
overlay_works() {
    local d
    d=$(mktemp -d)
    mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
    if $SUDO mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" \
        2>/dev/null; then
        $SUDO umount "$d/m"
        rm -rf "$d"
        return 0
    fi
    rm -rf "$d"
    return 1
}
if [ -z "$configured_driver" ] && overlay_works; then
    driver_args=(--storage-driver=overlay2)
fi

# --- start ---------------------------------------------------------------------------
# A dockerd that died leaves its pid file behind and the next one refuses to start.
if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null; then
    $SUDO rm -f "$PIDFILE"
fi

start() {
    echo "--- $(date -Is) starting dockerd $*" >>"$LOG"
    # setsid: the daemon must outlive this script and its caller's process group.
    $SUDO setsid dockerd "$@" >>"$LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
}

wait_for() {
    local deadline=$((SECONDS + $1))
    while [ $SECONDS -lt $deadline ]; do
        if answers; then return 0; fi
        # Starting twice at once: the loser exits, the winner may still answer.
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null && ! pgrep -x dockerd >/dev/null; then
            return 1
        fi
        sleep 1
    done
    return 1
}

if pgrep -x dockerd >/dev/null; then
    # Already starting (another caller): just wait for it.
    DOCKERD_PID=$(pgrep -x dockerd | head -1)
    if wait_for "$WAIT"; then exit 0; fi
    echo "dockerd is running but does not answer after ${WAIT}s; see $LOG" >&2
    exit 1
fi

start "${driver_args[@]}"
if wait_for "$WAIT"; then exit 0; fi

if [ ${#driver_args[@]} -gt 0 ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
    echo "dockerd with ${driver_args[*]} exited; retrying with the default driver" >&2
    $SUDO rm -f "$PIDFILE"
    start
    if wait_for "$WAIT"; then exit 0; fi
fi

echo "dockerd did not answer within ${WAIT}s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
