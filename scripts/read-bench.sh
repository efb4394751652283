#!/usr/bin/env bash
# Read benchmark through gRPC: generates a synthetic population plus residents known to every
# department (profiles of every catalog tag, ~2,100), loads it into a fresh server, and runs
# concurrent clients (benches/read_load.rs) on the same machine: GetProfile of the full
# profiles (decoded, and forwarded as a gateway would take them; full and compact), the same
# clients against a process that serves one stored answer and does nothing else (the
# transport's bound), GetProfile of ordinary persons spread over the whole store, with a 3-tag
# mask, and SearchPersons by name and birth date. Prints calls/s and latency percentiles.
#
#   scripts/read-bench.sh [PERSONS] [FULL_PROFILES] [CLIENTS]
#       default 334,000 persons (about 1,000,000 records), 200 full profiles, 32 clients
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
persons=${1:-334000}
full=${2:-200}
clients=${3:-32}

cargo build --release --quiet
cargo bench --bench read_load --no-run --quiet 2>/dev/null || true
bin="${CARGO_TARGET_DIR:-target}/release/popmaster"
work=$(mktemp -d)
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" generate --persons "$persons" --seed 3 --full-profiles "$full" --out "$work/records.jsonl"
port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 2> "$work/server.log" &
server_pid=$!
wait_until_serving "$bin" "$server_pid" "$work/server.log"
start=$(date +%s.%N)
"$bin" load "$work/records.jsonl" > /dev/null
end=$(date +%s.%N)
n_records=$(wc -l < "$work/records.jsonl")
awk -v a="$start" -v b="$end" -v n="$n_records" 'BEGIN { printf "loaded %d records in %.1f s: %.0f records/s\n", n, b - a, n / (b - a) }'
"$bin" export --out "$work/mapping.csv" 2>/dev/null
"$bin" stats | grep -E '^(records|persons|store bytes|ingest cost)'
grep -E '^VmHWM' "/proc/${server_pid}/status" | awk '{ printf "server peak resident memory: %d MiB\n", $2 / 1024 }' || true
# Persons with full profiles, and a spread of ordinary persons.
grep ',full-' "$work/mapping.csv" | cut -d, -f3 | sort -u > "$work/full.txt"
tail -n +2 "$work/mapping.csv" | grep -v ',full-' | cut -d, -f3 | sort -u | awk 'NR % 7 == 0' | head -n 50000 > "$work/ordinary.txt"
echo "cores: $(nproc); full profiles: $(wc -l < "$work/full.txt"); ordinary persons sampled: $(wc -l < "$work/ordinary.txt")"
run() { cargo bench --bench read_load --quiet -- --server "$POPMASTER_SERVER" "$@" 2>/dev/null | grep -E '^(GetProfile|SearchPersons)'; }
for n in 8 "$clients"; do
  run --persons "$work/full.txt" --clients "$n"
  run --persons "$work/full.txt" --clients "$n" --forward
  run --persons "$work/full.txt" --clients "$n" --compact
  run --persons "$work/full.txt" --clients "$n" --compact --forward
  # The transport's own bound: the same clients against a process serving one stored answer.
  run --persons "$work/full.txt" --clients "$n" --canned
  run --persons "$work/full.txt" --clients "$n" --canned --forward
  run --persons "$work/full.txt" --clients "$n" --canned --compact
  run --persons "$work/full.txt" --clients "$n" --canned --compact --forward
  run --persons "$work/ordinary.txt" --clients "$n"
  run --persons "$work/full.txt" --clients "$n" --tags name,id_number,phone
  run --search "$work/records.jsonl" --clients "$n"
done
