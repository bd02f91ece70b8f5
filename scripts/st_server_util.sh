# Starting and stopping st-server from scripts (tests/st_server_test.sh, tests/chat_page_test.sh,
# scripts/bench_server.sh); source it:
#   source "$SOURCE_DIR/scripts/st_server_util.sh"

# The pids start_st_server started; stop_st_servers ends them.
st_server_pids=()

# start_st_server LOG TIMEOUT_S ST_SERVER ARGS...: starts ST_SERVER --port 0 ARGS... in the
# background (stdout to LOG.out, stderr to LOG.err) and waits up to TIMEOUT_S seconds for its
# "st-server: listening on http://HOST:PORT" line. Sets server_pid, server_url and server_port;
# returns 1 (with the server's stderr printed) when it exits first or never listens.
start_st_server() {
  local log=$1 timeout=$2 bin=$3
  shift 3
  : > "$log.err"
  "$bin" --port 0 "$@" > "$log.out" 2> "$log.err" &
  server_pid=$!
  st_server_pids+=("$server_pid")
  server_url=
  local i
  for ((i = 0; i < timeout * 10; ++i)); do
    server_url=$(sed -n 's|^st-server: listening on \(http://[^ ]*\)$|\1|p' "$log.err" | head -n 1)
    [[ -n $server_url ]] && break
    if ! kill -0 "$server_pid" 2> /dev/null; then
      echo "st-server ($*) exited before listening; its stderr:" >&2
      cat "$log.err" >&2
      return 1
    fi
    sleep 0.1
  done
  if [[ -z $server_url ]]; then
    echo "st-server ($*) printed no 'listening on' line in $timeout s; its stderr:" >&2
    cat "$log.err" >&2
    return 1
  fi
  server_port=${server_url##*:}
}

# stop_st_servers: SIGTERM to every server start_st_server started; SIGKILL to any still running
# 5 s later. For a trap on EXIT: none outlives the script, whatever happens.
stop_st_servers() {
  local p i
  for p in "${st_server_pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${st_server_pids[@]}"; do
    for ((i = 0; i < 50; ++i)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
  done
  st_server_pids=()
}
