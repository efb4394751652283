#!/usr/bin/env bash
# Memory against store size: loads a synthetic population (default 334,000 persons and 200
# residents with full profiles, about 1,000,000 records) into a fresh server in three parts.
# After each part it prints the server's peak resident memory and its anonymous resident memory
# (the heap: RssAnon) at the end of the load and after 20 s idle; then it restarts the server
# and prints its anonymous memory 10 s after it serves again, before any read: what the
# store's size alone keeps in memory (sled's page table), with sled's page cache still empty.
#
#   scripts/memory-bench.sh [PERSONS] [FULL_PROFILES] [CONFIG.toml]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
persons=${1:-334000}
full=${2:-200}
config=${3:-}

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/popmaster"
work=$(mktemp -d)
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" generate --persons "$persons" --seed 3 --full-profiles "$full" --out "$work/records.jsonl"
split -n l/3 -d "$work/records.jsonl" "$work/part."
port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
serve() {
  "$bin" serve ${config:+--config "$config"} --data-dir "$work/data" --listen "127.0.0.1:${port}" \
    --metrics-listen 127.0.0.1:0 2>> "$work/server.log" &
  server_pid=$!
  wait_until_serving "$bin" "$server_pid" "$work/server.log"
}
memory() {
  awk -v what="$1" '/^(VmHWM|RssAnon):/ { m[$1] = $2 / 1024 }
    END { printf "  %-32s peak resident %5d MiB, anonymous resident %5d MiB\n", what, m["VmHWM:"], m["RssAnon:"] }' \
    "/proc/${server_pid}/status"
}
echo "cores: $(nproc); sled cache: ${config:-the default}"
serve
for part in "$work"/part.*; do
  start=$(date +%s.%N)
  "$bin" load "$part" > /dev/null
  end=$(date +%s.%N)
  records=$("$bin" stats | awk '$1 == "records" && NF == 2 { print $2 }')
  awk -v a="$start" -v b="$end" -v n="$(wc -l < "$part")" -v r="$records" \
    'BEGIN { printf "%d records (this part: %.0f records/s)\n", r, n / (b - a) }'
  memory "at the end of the load"
  sleep 20
  memory "after 20 s idle"
  kill -TERM "$server_pid"; wait "$server_pid" || true
  serve
  sleep 10
  memory "restarted, 10 s idle, no reads"
  du -sm "$work/data/store" | awk '{ printf "  store on disk: %d MiB\n", $1 }'
done
