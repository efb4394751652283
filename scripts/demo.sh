#!/usr/bin/env bash
# Runs popmaster on its embedded default (sled in a local data directory) and shows it doing
# its job on the shipped example data: load, look a person up by ID number, explain a match,
# trace a value's lineage and the person's history, search by name and birth date, list the
# review queue, report what cleansing did, export the record -> person mapping. Stops the server at the end unless
# --keep-running is given.
#
#   scripts/demo.sh [--keep-running]
#
# Environment: POPMASTER_DATA_DIR (default ./popmaster-data), POPMASTER_LISTEN
# (default 127.0.0.1:50051).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

keep_running=false
[[ "${1:-}" == "--keep-running" ]] && keep_running=true

data_dir=${POPMASTER_DATA_DIR:-popmaster-data}
listen=${POPMASTER_LISTEN:-127.0.0.1:50051}
export POPMASTER_SERVER="http://${listen}"

echo "== building popmaster (release)"
cargo build --release --quiet
bin=target/release/popmaster

echo "== starting the server: data in ${data_dir}, listening on ${listen}"
"$bin" serve --data-dir "$data_dir" --listen "$listen" &
server_pid=$!
stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
}
trap stop_server EXIT

# Its log is above.
wait_until_serving "$bin" "$server_pid"

echo "== loading examples/records.jsonl (synthetic residents from 63 departments)"
"$bin" load examples/records.jsonl
echo "== loading examples/showcase.jsonl (one resident as five departments send him; the fifth has no ID number)"
"$bin" load examples/showcase.jsonl

echo "== one ID card is enough: the profile of 33010619900102177X (given here in its legacy 15-digit form)"
"$bin" get --id-number 330106900102177

echo "== why the record without an ID number joined him: the matcher's evidence"
explanation=$("$bin" explain D20 EP-2024-0042)
echo "$explanation"
person=$(echo "$explanation" | awk 'NR == 1 { print $NF }')

echo "== where his phone came from: every department's value, and why this one is in the profile"
"$bin" lineage "$person" phone

echo "== his history: every record that joined him, and why"
"$bin" history "$person"

echo "== a clerk searches by name and birth date, typed in traditional characters"
"$bin" search --name "張偉" --birth-date "1990年1月2日" --top 3

echo "== possible matches waiting for a steward"
"$bin" review list --limit 2

echo "== what cleansing did to the records of the public security department (D01)"
"$bin" quality D01

echo "== the record -> person mapping"
"$bin" export --out "${data_dir}/mapping.csv"
head -n 5 "${data_dir}/mapping.csv"

echo "== counts"
"$bin" stats

if $keep_running; then
  echo "== the server keeps running at ${POPMASTER_SERVER}; Ctrl-C stops it"
  wait "$server_pid"
fi
