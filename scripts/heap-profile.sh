#!/usr/bin/env bash
# Who holds the heap a load adds. Builds the server on the system allocator (the
# `system-allocator` feature, so that heaptrack sees every allocation), loads WARM synthetic
# records into a fresh store, attaches heaptrack, loads the next WINDOW records, then kills the
# server with SIGKILL so that nothing is freed on the way out. What the window allocated and
# still held at the kill is sorted by owner:
#
#   sled             allocated inside sled: through the store's adapter (src/store/kv.rs, the
#                    only caller of sled) or by sled's own threads (log flusher, thread pool)
#   candidate index  the index thread and tantivy (src/engine/indexer.rs, index/)
#   read-ahead       the writer's read-ahead and its kept pairs (read_ahead.rs)
#   everything else
#
#   scripts/heap-profile.sh [WARM] [WINDOW]        (defaults: 200000 and 50000 records)
#
# Needs heaptrack and gdb (Debian: apt-get install heaptrack gdb) and permission to ptrace the
# server. The system allocator is slower than the release binary's mimalloc and keeps more
# memory, so read the owners' shares, not the absolute sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
warm=${1:-200000}
window=${2:-50000}
for tool in heaptrack heaptrack_print gdb; do
  command -v "$tool" > /dev/null || { echo "needs $tool (Debian: apt-get install heaptrack gdb)"; exit 2; }
done

target=target/system-allocator
cargo build --release --quiet --features system-allocator --target-dir "$target"
bin="$target/release/popmaster"
work=$(mktemp -d)
trap 'kill -KILL "${server_pid:-0}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# About three records a person: enough persons for both parts.
"$bin" generate --persons $(( (warm + window) / 2 )) --seed 3 --full-profiles 200 \
  --out "$work/records.jsonl"
head -n "$warm" "$work/records.jsonl" > "$work/warm.jsonl"
sed -n "$(( warm + 1 )),$(( warm + window ))p" "$work/records.jsonl" > "$work/window.jsonl"
rm "$work/records.jsonl"

port=$(( 20000 + RANDOM % 20000 ))
export POPMASTER_SERVER="http://127.0.0.1:${port}"
"$bin" serve --data-dir "$work/data" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 \
  2> "$work/server.log" &
server_pid=$!
wait_until_serving "$bin" "$server_pid" "$work/server.log"
heap() { awk '/^RssAnon:/ { printf "%d MiB", $2 / 1024 }' "/proc/${server_pid}/status"; }

"$bin" load "$work/warm.jsonl" > /dev/null
echo "cores: $(nproc); after $(wc -l < "$work/warm.jsonl") records the heap (RssAnon) is $(heap)"
heaptrack -o "$work/heap" -p "$server_pid" > "$work/heaptrack.out" 2>&1 &
heaptrack_pid=$!
for _ in $(seq 1 300); do
  grep -q "injection finished" "$work/heaptrack.out" && break
  sleep 0.2
done
grep -q "injection finished" "$work/heaptrack.out" || { echo "heaptrack did not attach:"; cat "$work/heaptrack.out"; exit 1; }
"$bin" load "$work/window.jsonl" > /dev/null
echo "after $(wc -l < "$work/window.jsonl") more records it is $(heap)"
kill -KILL "$server_pid"
{ wait "$server_pid"; } 2> /dev/null || true
wait "$heaptrack_pid" || true

heaptrack_print -f "$work"/heap.* --print-leaks 0 --print-peaks 0 --print-allocators 0 \
  --print-temporary 0 --flamegraph-cost-type leaked -F "$work/stacks" > /dev/null
# Each line of the stacks file: the frames (outermost first, `function (file.rs)`), separated
# by `;`, then the bytes still held.
awk '
  {
    bytes = $NF
    owner = "everything else"
    if ($0 ~ /\((kv|flusher|threadpool)\.rs\)/) owner = "sled"
    else if ($0 ~ /\((indexer|candidate_index)\.rs\)/) owner = "candidate index"
    else if ($0 ~ /\(read_ahead\.rs\)/) owner = "read-ahead"
    held[owner] += bytes
    total += bytes
  }
  END {
    printf "allocated during the window and still held at the kill: %.1f MiB\n", total / 1048576
    n = split("sled,candidate index,read-ahead,everything else", order, ",")
    for (i = 1; i <= n; i++)
      printf "  %-16s %8.1f MiB  %5.1f%%\n", order[i], held[order[i]] / 1048576, 100 * held[order[i]] / total
  }' "$work/stacks"
