#!/usr/bin/env bash
# End-to-end benchmark at volume: generates a synthetic population, loads it into a fresh
# server through `popmaster load` (gRPC, every batch durable before it is answered), exports
# the mapping, and checks that every record is mapped. Prints the wall time and rate of each
# step, the server's per-record cost by stage (`popmaster stats`), and its resident memory
# sampled every 5 s during the load (peak included), to show whether memory grows with the
# store.
#
#   scripts/load-and-export.sh [PERSONS]      (default 34,000 persons, about 101,500 records;
#                                              334,000 persons make about 1,000,000 records)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
persons=${1:-34000}

cargo build --release --quiet
bin=target/release/popmaster
work=$(mktemp -d)
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" generate --persons "$persons" --seed 2 --out "$work/records.jsonl" --truth "$work/truth.csv"
n_records=$(wc -l < "$work/records.jsonl")
port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 2> "$work/server.log" &
server_pid=$!
wait_until_serving "$bin" "$server_pid" "$work/server.log"

# Resident memory of the server, every 5 s: elapsed seconds and MiB.
(
  while kill -0 "$server_pid" 2>/dev/null; do
    rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/${server_pid}/status" 2>/dev/null || echo 0)
    echo "$SECONDS $(( rss_kib / 1024 ))" >> "$work/rss.txt"
    sleep 5
  done
) &
start=$(date +%s.%N)
"$bin" load "$work/records.jsonl"
loaded=$(date +%s.%N)
peak_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/${server_pid}/status")
"$bin" export --out "$work/mapping.csv"
exported=$(date +%s.%N)
n_mapped=$(( $(wc -l < "$work/mapping.csv") - 1 ))
n_distinct=$(tail -n +2 "$work/mapping.csv" | cut -d, -f1,2 | sort -u | wc -l)

echo "records generated: ${n_records}"
echo "records mapped:    ${n_mapped} (distinct ${n_distinct})"
awk -v a="$start" -v b="$loaded" -v n="$n_records" 'BEGIN { printf "load:   %.1f s, %.0f records/s\n", b - a, n / (b - a) }'
awk -v a="$loaded" -v b="$exported" 'BEGIN { printf "export: %.1f s\n", b - a }'
echo "cores: $(nproc)"
"$bin" stats | grep -E "^(records|persons|review items|ingest cost|store bytes)"
echo "server resident memory during the load (s MiB): $(tr '\n' ' ' < "$work/rss.txt")"
echo "server peak resident memory: $(( peak_kib / 1024 )) MiB"
[[ "$n_mapped" -eq "$n_records" && "$n_distinct" -eq "$n_records" ]] || { echo "MISMATCH" >&2; exit 1; }
