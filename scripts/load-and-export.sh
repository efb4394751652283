#!/usr/bin/env bash
# End-to-end check at volume: generates a synthetic population, loads it into a fresh server
# through `popmaster load`, exports the mapping, and checks that every record is mapped.
# Prints the wall time of each step.
#
#   scripts/load-and-export.sh [PERSONS]      (default 34,000 persons, about 101,500 records)
set -euo pipefail
cd "$(dirname "$0")/.."
persons=${1:-34000}

cargo build --release --quiet
bin=target/release/popmaster
work=$(mktemp -d)
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" generate --persons "$persons" --seed 2 --out "$work/records.jsonl" --truth "$work/truth.csv"
n_records=$(wc -l < "$work/records.jsonl")
port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:${port}" 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do "$bin" stats >/dev/null 2>&1 && break; sleep 0.2; done

start=$(date +%s.%N)
"$bin" load "$work/records.jsonl"
loaded=$(date +%s.%N)
"$bin" export --out "$work/mapping.csv"
exported=$(date +%s.%N)
n_mapped=$(( $(wc -l < "$work/mapping.csv") - 1 ))
n_distinct=$(tail -n +2 "$work/mapping.csv" | cut -d, -f1,2 | sort -u | wc -l)

echo "records generated: ${n_records}"
echo "records mapped:    ${n_mapped} (distinct ${n_distinct})"
awk -v a="$start" -v b="$loaded" -v n="$n_records" 'BEGIN { printf "load:   %.1f s, %.0f records/s\n", b - a, n / (b - a) }'
awk -v a="$loaded" -v b="$exported" 'BEGIN { printf "export: %.1f s\n", b - a }'
echo "cores: $(nproc)"
[[ "$n_mapped" -eq "$n_records" && "$n_distinct" -eq "$n_records" ]] || { echo "MISMATCH" >&2; exit 1; }
