#!/usr/bin/env bash
# Start a Redis for tests/workers on 127.0.0.1:$1 (default 6390) unless one answers.
# noeviction: an evicted fingerprint or job key is silently lost work.
set -euo pipefail
port=${1:-6390}
if redis-cli -p "$port" ping >/dev/null 2>&1; then exit 0; fi
dir=${REDIS_DIR:-/tmp/connector-redis-$port}
mkdir -p "$dir"
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
  --save '' --appendonly "${REDIS_AOF:-no}" --maxmemory-policy noeviction \
  --logfile "$dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis did not start on port $port; see $dir/redis.log" >&2
exit 1
