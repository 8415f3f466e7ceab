#!/usr/bin/env bash
# linkpulse vs lychee on the same list of links, in one run (docs/benchmarks.md reports it).
#
# For each concurrency of CONCS: `bench links` (import → cycle → real `worker` processes until the
# queue is drained; checks/s, worker CPU and peak RSS, database CPU, verdicts), then lychee on the
# same file against the same local site with the same concurrency, no per-host limits, no retries
# and the same 5 s timeout, timed by /usr/bin/time. Prints one JSON line per system and
# concurrency, and one comparison line (throughput ratio, verdicts per URL). Then, as a ceiling,
# the queue alone on the same server: COUNT no-op jobs drained at the same concurrency (`bench
# queue`, its `process` line); the comparison line gives its ratio to lychee too
# (`noop_queue_ratio`): no handler, however cheap, can take linkpulse past it.
#
# Environment:
#   CONCS         concurrencies to measure, default "128 512"
#   COUNT         URLs in the list, default 5000 (80 % 200, 5 % each 404 / 500 / slow 200 / 302)
#   PORT          port of the test site, default 18765
#   WORKERS       linkpulse worker processes sharing each concurrency, default 1
#   HOST_CONCURRENCY  the queue's per-host cap for linkpulse, default 1000000: "per-host limits
#                 off", as lychee runs. (Our cap counts every leased job of a host, including
#                 those claimed ahead into a worker's buffer and those finished but not yet
#                 acknowledged, so a cap equal to the concurrency binds where lychee's does not.)
#   DATABASE_URL  a server to create the scratch databases on; unset = a throwaway PostgreSQL
#                 cluster of the machine's version in a temporary directory (a private
#                 server keeps other clients' load off the measurement)
#   LYCHEE        lychee binary, default target/tools/bin/lychee (installed there when missing:
#                 `cargo install lychee --version 0.24.2 --locked --root target/tools`)
#   OUT           directory for the lists, per-URL results and logs, default target/links-vs-lychee
#   SKIP_BUILD=1  use the release binaries as they are
#   PG_STATS=1    profile the database's share: the private server preloads pg_stat_statements,
#                 and each linkpulse run writes its top statements and the links / queue_jobs /
#                 link_verdicts update counters (HOT or not) to OUT/pgstats-CONC.txt
#   RETAINED_DONE=N  write N finished jobs into the table before each linkpulse run (retained
#                 history), to compare PostgreSQL's CPU per check with and without it
set -euo pipefail
cd "$(dirname "$0")/.."

CONCS=${CONCS:-"128 512"}
COUNT=${COUNT:-5000}
PORT=${PORT:-18765}
export WORKERS=${WORKERS:-1}
export HOST_CONCURRENCY=${HOST_CONCURRENCY:-1000000}
LYCHEE=${LYCHEE:-target/tools/bin/lychee}
LYCHEE_VERSION=0.24.2
OUT=${OUT:-target/links-vs-lychee}
# Where `cargo build` puts the binaries (CARGO_TARGET_DIR moves them out of target/).
BIN=${CARGO_TARGET_DIR:-target}/release
TIMEOUT_S=5

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [[ ! -x /usr/bin/time ]]; then
  echo "error: /usr/bin/time is needed for lychee's CPU and peak RSS (Debian package 'time')" >&2
  exit 1
fi

if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  cargo build --release --locked -p bench -p worker >&2
fi
if [[ ! -x "$LYCHEE" ]]; then
  echo "installing lychee $LYCHEE_VERSION into target/tools" >&2
  cargo install lychee --version "$LYCHEE_VERSION" --locked --root target/tools >&2
  LYCHEE=target/tools/bin/lychee
fi

pids=()
pg_dir=""
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$pg_dir" ]]; then
    as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT

# PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
as_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [[ -z "${DATABASE_URL:-}" ]]; then
  version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$version" ]]; then
    echo "error: no PostgreSQL server under /usr/lib/postgresql: run scripts/ensure-postgres.sh or set DATABASE_URL" >&2
    exit 1
  fi
  pg_bin=/usr/lib/postgresql/$version/bin
  pg_port=55432
  pg_dir=$(mktemp -d /tmp/linkpulse-bench-pg.XXXXXX)
  [[ $(id -u) == 0 ]] && chown postgres "$pg_dir"
  as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >"$pg_dir/initdb.log"
  # Defaults of a stock server but for max_connections: fsync and synchronous_commit stay on.
  pg_opts="-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=1200"
  if [[ "${PG_STATS:-}" == 1 ]]; then
    pg_opts+=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
  fi
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -o "$pg_opts" start >/dev/null
  DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
  echo "PostgreSQL $version on 127.0.0.1:$pg_port (throwaway cluster in $pg_dir)" >&2
fi

list="$OUT/links.txt"
rm -f "$list"
"$BIN/bench" site "$PORT" --urls "$list" --count "$COUNT" 2>"$OUT/site.log" &
pids+=($!)
for _ in $(seq 1 100); do
  [[ -s "$list" ]] && break
  sleep 0.1
done
[[ -s "$list" ]] || { echo "error: the test site did not start (see $OUT/site.log)" >&2; exit 1; }

echo "machine: $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2}') MiB; load before: $(uptime)" >&2
echo "linkpulse $(git rev-parse --short HEAD 2>/dev/null || echo '?') (working tree), $("$LYCHEE" --version)" >&2

for conc in $CONCS; do
  # linkpulse: one JSON line from the bench.
  if [[ "${PG_STATS:-}" == 1 ]]; then export PG_STATS_FILE="$OUT/pgstats-$conc.txt"; fi
  CONC=$conc VERDICTS="$OUT/linkpulse-$conc.tsv" WORKER_LOG="$OUT/worker-$conc.log" \
    "$BIN/bench" links "$list" "$DATABASE_URL" 2>"$OUT/bench-$conc.log" | tee "$OUT/linkpulse-$conc.json"

  # lychee: same list, same concurrency, per-host limits off (host concurrency = concurrency,
  # no request interval), no retries, same timeout; exit code 2 only means broken links.
  start=$(date +%s%N)
  set +e
  /usr/bin/time -v -o "$OUT/lychee-$conc.time" "$LYCHEE" \
    --max-concurrency "$conc" --host-concurrency "$conc" --host-request-interval 0ms \
    --max-retries 0 --timeout "$TIMEOUT_S" --no-progress --format json --output "$OUT/lychee-$conc.json" \
    "$list" >/dev/null 2>"$OUT/lychee-$conc.log"
  status=$?
  set -e
  end=$(date +%s%N)
  if [[ $status != 0 && $status != 2 ]]; then
    echo "error: lychee exited with $status (see $OUT/lychee-$conc.log)" >&2
    exit 1
  fi

  # The ceiling: the same number of jobs through the queue with handlers that do nothing.
  if ! N=$COUNT CONC=$conc "$BIN/bench" queue "$DATABASE_URL" 2>"$OUT/queue-$conc.log" \
    | grep '"phase":"process"' >"$OUT/queue-$conc.json"; then
    echo "error: the queue-alone run failed (see $OUT/queue-$conc.log)" >&2
    exit 1
  fi

  python3 - "$conc" "$((end - start))" "$OUT" <<'PY'
import json, re, sys

conc, nanos, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seconds = nanos / 1e9
time_v = open(f"{out}/lychee-{conc}.time").read()
def field(name):
    return float(re.search(re.escape(name) + r":\s*([0-9.]+)", time_v).group(1))
cpu_s = field("User time (seconds)") + field("System time (seconds)")
rss_kib = field("Maximum resident set size (kbytes)")
report = json.load(open(f"{out}/lychee-{conc}.json"))
errors = {}
for entries in report.get("error_map", {}).values():
    for entry in entries:
        errors[entry["url"]] = entry.get("status", {}).get("code")
urls = report["total"]
lychee = {
    "system": "lychee", "phase": "links", "urls": urls, "concurrency": conc,
    "checks_per_s": int(urls / seconds), "seconds": round(seconds, 3),
    "cpu_ms_per_check": round(cpu_s * 1000 / urls, 3), "peak_rss_mb": round(rss_kib / 1024, 1),
    "verdicts": {"success": report["successful"], "errors": report["errors"], "timeouts": report["timeouts"]},
}
print(json.dumps(lychee))

ours = json.loads(open(f"{out}/linkpulse-{conc}.json").read().strip().splitlines()[-1])
mismatches = []
for line in open(f"{out}/linkpulse-{conc}.tsv"):
    url, verdict, status = line.rstrip("\n").split("\t")
    lychee_ok = url not in errors
    if (verdict == "ok") != lychee_ok:
        mismatches.append((url, verdict, status, errors.get(url, "success")))
checked = sum(1 for _ in open(f"{out}/linkpulse-{conc}.tsv"))
noop = json.loads(open(f"{out}/queue-{conc}.json").read().strip().splitlines()[-1])
print(json.dumps(noop))
print(json.dumps({
    "compare": "linkpulse/lychee", "concurrency": conc,
    "checks_per_s_ratio": round(ours["checks_per_s"] / lychee["checks_per_s"], 2),
    "cpu_per_check_ratio": round(ours["cpu_ms_per_check"] / lychee["cpu_ms_per_check"], 2),
    "noop_queue_ratio": round(noop["jobs_per_s"] / lychee["checks_per_s"], 2),
    "urls_both": checked == urls, "verdict_mismatches": len(mismatches),
    "examples": mismatches[:5],
}))
PY
done

echo "load after: $(uptime)" >&2
