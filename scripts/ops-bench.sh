#!/usr/bin/env bash
# Operations benchmark on a fresh server: loads a synthetic population (default 334,000
# persons, about 1,000,000 records), then
#   1. rebuilds the candidate index online (`admin rebuild-index`) and prints persons/s;
#   2. kills the server with SIGKILL during heavy ingest (a second population streaming in),
#      restarts it, and prints how long it took to serve again (write-ahead log replayed) and
#      to have the index caught up again.
#
#   scripts/ops-bench.sh [PERSONS] [SECONDS_OF_INGEST_BEFORE_THE_KILL]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
persons=${1:-334000}
ingest_seconds=${2:-20}

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/popmaster"
work=$(mktemp -d)
trap 'kill -KILL "${server_pid:-0}" "${load_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" generate --persons "$persons" --seed 3 --out "$work/records.jsonl"
"$bin" generate --persons "$(( persons / 4 ))" --seed 4 --out "$work/more.jsonl"
port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
serve() { "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 2>> "$work/server.log" & server_pid=$!; }
now() { date +%s.%N; }
serve
wait_until_serving "$bin" "$server_pid" "$work/server.log"
start=$(now)
"$bin" load "$work/records.jsonl" > /dev/null
awk -v a="$start" -v b="$(now)" -v n="$(wc -l < "$work/records.jsonl")" \
  'BEGIN { printf "loaded %d records in %.1f s: %.0f records/s\n", n, b - a, n / (b - a) }'
"$bin" stats | grep -E '^(records  |persons|store bytes)'
echo "cores: $(nproc)"

echo "--- online index rebuild"
"$bin" admin rebuild-index

echo "--- kill -9 during heavy ingest, then restart"
"$bin" load "$work/more.jsonl" > /dev/null 2>&1 & load_pid=$!
sleep "$ingest_seconds"
"$bin" stats | grep -E '^(records  |applied sequence)' | sed 's/^/before the kill: /'
kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null || true
kill -KILL "$load_pid" 2>/dev/null || true; wait "$load_pid" 2>/dev/null || true
start=$(now)
serve
until "$bin" stats >/dev/null 2>&1; do
  kill -0 "$server_pid" 2>/dev/null || { echo "the server exited while recovering:"; tail -5 "$work/server.log"; exit 1; }
  sleep 0.05
done
serving=$(now)
until "$bin" stats | awk '/^change sequence/ { c = $3 } /^index watermark/ { w = $3 } END { exit !(c == w) }'; do sleep 0.1; done
caught_up=$(now)
grep -o 'n_replayed=[0-9]*' "$work/server.log" | tail -1 | sed 's/^/write-ahead log entries replayed: /' || echo "write-ahead log entries replayed: 0"
"$bin" stats | grep -E '^(records  |applied sequence)' | sed 's/^/after the restart: /'
awk -v a="$start" -v b="$serving" -v c="$caught_up" \
  'BEGIN { printf "recovery: serving again %.1f s after the restart, index caught up after %.1f s\n", b - a, c - a }'
