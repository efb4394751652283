# Shared by the scripts in this directory: sourced (`. scripts/lib.sh`), not run.

# wait_until_serving BIN PID [LOG]: polls the server at $POPMASTER_SERVER with `BIN stats`
# until it answers (up to 60 s). Exits the script if the server process PID ends first, with
# the end of LOG (when given: the server's standard error), or if it never answers.
wait_until_serving() {
  local bin=$1 pid=$2 log=${3:-}
  for _ in $(seq 1 300); do
    "$bin" stats > /dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the server exited before it served" >&2
      [[ -n "$log" ]] && tail -20 "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the server did not answer within 60 s${log:+; its log: $log}" >&2
  exit 1
}
