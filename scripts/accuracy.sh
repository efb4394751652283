#!/usr/bin/env bash
# Measures popmaster's accuracy through the real service. Each dataset is measured twice:
#
# - defaults: a fresh server (empty data directory, free port, the shipped model) loads the
#   records with `popmaster load`; the record -> person mapping comes from `popmaster export`
#   and is scored with `popmaster accuracy` (pairwise precision, recall, F1). Then
#   `popmaster admin train` re-estimates the model from what that server stored (no ground
#   truth is involved) and saves it.
# - trained: a second fresh server installs that model (`popmaster admin install-model`) before
#   loading the same records, and is scored the same way.
#
# Prints each run's table, the wall time of load and export, and at the end a Markdown table
# for the README.
#
#   scripts/accuracy.sh                          febrl3, febrl4 and the synthetic population
#   scripts/accuracy.sh febrl3 | febrl4          one built-in FEBRL dataset
#   scripts/accuracy.sh synthetic [PERSONS]      the synthetic population (default 20,000 persons)
#   scripts/accuracy.sh febrl FILE PAIRS         any FEBRL-format file to deduplicate, and its true pairs
#   scripts/accuracy.sh febrl-link A B PAIRS     two FEBRL-format files to link (rec_id_1 in A, rec_id_2 in B)
#
# FEBRL records are loaded as sources whose only required tag is `name` (catalog/sources.csv):
# D15 (statistics bureau), and D18 (culture and tourism) for the second file of a link.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

readonly FEBRL_SOURCE=D15
readonly FEBRL_SECOND_SOURCE=D18
readonly SYNTHETIC_SEED=20240501

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/popmaster"
work=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
  server_pid=
}
trap 'stop_server; rm -rf "$work"' EXIT

# A port nothing listens on.
free_port() {
  local port
  while true; do
    port=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null || { echo "$port"; return; }
  done
}

# start_server NAME: a fresh server with its own data directory; sets POPMASTER_SERVER.
start_server() {
  local dir="$work/$1" port
  mkdir -p "$dir"
  port=$(free_port)
  export POPMASTER_SERVER="http://127.0.0.1:${port}"
  "$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:${port}" --metrics-listen 127.0.0.1:0 2> "$dir/server.log" &
  server_pid=$!
  wait_until_serving "$bin" "$server_pid" "$dir/server.log"
}

summary="$work/summary.md"
{
  echo "| data | task | model | records | true pairs | precision | recall | F1 | TP | FP | FN | load + export s |"
  echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} > "$summary"

# run NAME DATA TASK MODEL JSONL... -- ACCURACY_ARGS...: loads the JSONL files into a fresh
# server (after installing MODEL, unless it is "-"), exports, scores, adds a row per breakdown
# to the summary, and (with the shipped model) trains a model on the stored data, saved as
# $work/NAME/model.json.
run() {
  local name=$1 data=$2 task=$3 model=$4
  shift 4
  local files=()
  while [[ "$1" != "--" ]]; do files+=("$1"); shift; done
  shift
  local label_model=defaults
  if [[ "$model" != "-" ]]; then label_model="trained on the data"; fi
  echo "== ${data}: ${task} (${label_model})"
  start_server "$name"
  if [[ "$model" != "-" ]]; then "$bin" admin install-model "$model"; fi
  local start end
  start=$(date +%s.%N)
  for file in "${files[@]}"; do "$bin" load "$file"; done
  "$bin" export --out "$work/$name/mapping.csv" 2>/dev/null
  end=$(date +%s.%N)
  if [[ "$model" == "-" ]]; then
    "$bin" admin train --save "$work/$name/model.json" > "$work/$name/training.txt"
    head -n 1 "$work/$name/training.txt"
  fi
  stop_server
  "$bin" accuracy --mapping "$work/$name/mapping.csv" "$@"
  local seconds
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  echo "load + export: ${seconds} s"
  "$bin" accuracy --mapping "$work/$name/mapping.csv" "$@" --tsv | tail -n +2 |
    while IFS=$'\t' read -r breakdown records true_pairs _predicted tp fp fn precision recall f1; do
      local label=$data
      [[ "$breakdown" == "without_usable_id" ]] && label="${data}, records without a usable ID number"
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$label" "$task" "$label_model" "$records" "$true_pairs" "$precision" "$recall" "$f1" "$tp" "$fp" "$fn" "$seconds" >> "$summary"
    done
  echo
}

# measure NAME DATA TASK JSONL... -- ACCURACY_ARGS...: the run with the shipped model, then the
# run with the model trained on what the first run stored.
measure() {
  local name=$1
  shift
  run "$name" "$@"
  run "${name}-trained" "$1" "$2" "$work/$name/model.json" "${@:4}"
}

febrl_dedupe() {
  local name=$1 file=$2 pairs=$3
  "$bin" febrl-to-jsonl "$file" --source "$FEBRL_SOURCE" --out "$work/${name}.jsonl"
  measure "$name" "$name" "dedupe" - "$work/${name}.jsonl" -- --pairs "$pairs" --sources "$FEBRL_SOURCE"
}

febrl_link() {
  local name=$1 left=$2 right=$3 pairs=$4
  "$bin" febrl-to-jsonl "$left" --source "$FEBRL_SOURCE" --out "$work/${name}-left.jsonl"
  "$bin" febrl-to-jsonl "$right" --source "$FEBRL_SECOND_SOURCE" --out "$work/${name}-right.jsonl"
  measure "$name" "$name" "link (pairs across)" - "$work/${name}-left.jsonl" "$work/${name}-right.jsonl" -- \
    --pairs "$pairs" --sources "${FEBRL_SOURCE},${FEBRL_SECOND_SOURCE}"
}

synthetic() {
  local persons=$1
  "$bin" generate --persons "$persons" --seed "$SYNTHETIC_SEED" \
    --out "$work/synthetic.jsonl" --truth "$work/synthetic-truth.csv"
  measure synthetic "synthetic, ${persons} persons" "every pair" - "$work/synthetic.jsonl" -- \
    --truth "$work/synthetic-truth.csv" --records "$work/synthetic.jsonl"
}

usage() {
  sed -n '15,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-all}" in
  all)
    febrl_dedupe febrl3 data/febrl/febrl3.csv data/febrl/febrl3_true_pairs.csv
    febrl_link febrl4 data/febrl/febrl4a.csv data/febrl/febrl4b.csv data/febrl/febrl4_true_pairs.csv
    synthetic 20000
    ;;
  febrl3) febrl_dedupe febrl3 data/febrl/febrl3.csv data/febrl/febrl3_true_pairs.csv ;;
  febrl4) febrl_link febrl4 data/febrl/febrl4a.csv data/febrl/febrl4b.csv data/febrl/febrl4_true_pairs.csv ;;
  synthetic) synthetic "${2:-20000}" ;;
  febrl)
    [[ $# -eq 3 ]] || usage
    febrl_dedupe "$(basename "$2" .csv)" "$2" "$3"
    ;;
  febrl-link)
    [[ $# -eq 4 ]] || usage
    febrl_link "$(basename "$2" .csv)+$(basename "$3" .csv)" "$2" "$3" "$4"
    ;;
  *) usage ;;
esac

echo "== summary ($(nproc) cores, release build)"
cat "$summary"
