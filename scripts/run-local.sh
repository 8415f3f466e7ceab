#!/usr/bin/env bash
# Runs the whole system locally: PostgreSQL, migrations, a demo site, sample links, the producer
# and two workers. Ctrl-C stops everything (the workers drain first).
#
#   DATABASE_URL   default postgres://postgres@127.0.0.1:5432/linkpulse (created if missing)
#   WORKERS        number of worker processes (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/linkpulse}
workers=${WORKERS:-2}
scripts/ensure-postgres.sh

db=${DATABASE_URL##*/}; db=${db%%\?*}
server=${DATABASE_URL%/*}
if ! psql "$server/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  echo "creating database $db" >&2
  psql "$server/postgres" -qc "CREATE DATABASE \"$db\""
fi

cargo build --release --locked -p producer -p worker
bin=target/release

# Demo settings: check every minute, cycle every 10 s, let the fetcher reach the local demo site.
export LINKPULSE_CHECK_AFTER=${LINKPULSE_CHECK_AFTER:-1m}
export LINKPULSE_REFRESH_AFTER=${LINKPULSE_REFRESH_AFTER:-5m}
export LINKPULSE_CYCLE_INTERVAL=${LINKPULSE_CYCLE_INTERVAL:-10s}
export LINKPULSE_ALLOWED_HOSTS=${LINKPULSE_ALLOWED_HOSTS:-127.0.0.1}
export LINKPULSE_HTTP_TIMEOUT=${LINKPULSE_HTTP_TIMEOUT:-5s}

"$bin/producer" migrate
"$bin/producer" links import demo/links.txt

pids=()
cleanup() {
  echo "stopping (workers drain in-flight jobs first)" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

python3 -m http.server 8765 --bind 127.0.0.1 --directory demo/site >/dev/null 2>&1 &
pids+=($!)
"$bin/producer" run &
pids+=($!)
for i in $(seq 1 "$workers"); do
  LINKPULSE_WORKER_ADDR=127.0.0.1:$((9090 + i)) "$bin/worker" --concurrency 8 &
  pids+=($!)
done

echo "running: producer + $workers workers. In another shell:" >&2
echo "  $bin/producer links list      $bin/producer queue stats" >&2
# `sleep & wait` rather than a foreground sleep, so Ctrl-C / SIGTERM runs the cleanup at once.
while true; do
  sleep 15 &
  wait $! || break
  "$bin/producer" links list || true
done
