#!/usr/bin/env bash
# A backup while ingest goes on: loads a synthetic population, then takes a backup with
# `popmaster admin backup` while another `popmaster load` streams into the same server,
# restores it offline and starts a server on the restore. Prints the ingest rate alone and
# during the backup, what the backup cost the write path (batches committed meanwhile, the
# longest wait of one commit), the backup's size and rate, the restore's time, and how long
# the restored server takes to rebuild its search index.
#
#   scripts/backup-bench.sh [PERSONS]     (default 20,000 persons, about 60,000 records)
#
# POPMASTER_BIN names a release binary to use instead of building target/release/popmaster.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
persons=${1:-20000}

if [[ -z "${POPMASTER_BIN:-}" ]]; then
  cargo build --release --quiet
fi
bin=${POPMASTER_BIN:-target/release/popmaster}
work=$(mktemp -d)
trap 'kill -TERM "${server_pid:-0}" "${load_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
serve() {
  "$bin" serve --data-dir "$1" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 2>> "$work/server.log" &
  server_pid=$!
  wait_until_serving "$bin" "$server_pid" "$work/server.log"
}
stat_of() { "$bin" stats | awk -v name="$1" '$0 ~ "^" name " " { print $NF; exit }'; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

extra=$(( persons / 4 ))
"$bin" generate --persons "$persons" --seed 2 --out "$work/base.jsonl" 2>/dev/null
"$bin" generate --persons "$extra" --seed 3 --out "$work/alone.jsonl" 2>/dev/null
"$bin" generate --persons "$extra" --seed 4 --out "$work/during.jsonl" 2>/dev/null

serve "$work/data"
"$bin" load "$work/base.jsonl" > /dev/null
echo "loaded $(stat_of records) records, $(stat_of persons) persons; store $(du -sh "$work/data/store" | cut -f1) on disk"

n_alone=$(wc -l < "$work/alone.jsonl")
start=$(now)
"$bin" load "$work/alone.jsonl" > /dev/null
end=$(now)
echo "ingest alone: $(rate "$n_alone" "$start" "$end") records/s"

"$bin" load "$work/during.jsonl" > /dev/null &
load_pid=$!
sleep 2
n_before=$(stat_of records)
start=$(now)
"$bin" admin backup "$work/backup" | tee "$work/backup.txt"
end=$(now)
n_after=$(stat_of records)
echo "ingest during the backup: $(rate $(( n_after - n_before )) "$start" "$end") records/s ($(( n_after - n_before )) records in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s)"
wait "$load_pid"
load_pid=
echo "backup on disk: $(du -sh "$work/backup" | cut -f1)"
# The server's own account: pre-images kept, their peak, the longest commit wait.
grep "backup written" "$work/server.log" | sed 's/^.*backup written/server: backup written/'

kill -TERM "$server_pid"
wait "$server_pid" || true

start=$(now)
"$bin" restore "$work/backup" --data-dir "$work/restored" > /dev/null
end=$(now)
echo "restore: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"

start=$(now)
serve "$work/restored"
while [[ "$(stat_of 'index watermark')" != "$(stat_of 'change sequence')" ]]; do sleep 0.2; done
end=$(now)
echo "restored server serving with its index rebuilt: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s ($(stat_of records) records)"
