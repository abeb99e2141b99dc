#!/usr/bin/env bash
# Runs a command against a freshly started cryptobot binary on 127.0.0.1 (a free port, a throw-away
# database), then stops the server. The command gets the base URLs in HTTP_URL and WS_URL and the
# server's process id in SERVER_PID. CRYPTOBOT_ARGS adds arguments to the server's command line
# (e.g. "--config crates/server/config/bench.toml").
#   scripts/with-server.sh <command> [args...]
set -euo pipefail

bin="${CRYPTOBOT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cryptobot}"
work="$(mktemp -d)"
log="$work/server.log"
cleanup() {
  if [ -n "${pid:-}" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    # A server that ignores SIGTERM (it once did, on a full disk) must not hang the caller.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "with-server.sh: the server ignored SIGTERM for 10 s; killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

CRYPTOBOT__SERVER__PORT=0 CRYPTOBOT__STORAGE__PATH="$work/cryptobot.db" \
  CRYPTOBOT__TRADING__AUTO_TRADE="${AUTO_TRADE:-false}" \
  CRYPTOBOT__MARKET__TICKS_PER_SECOND="${TICKS_PER_SECOND:-5}" RUST_LOG="${RUST_LOG:-info},cryptobot_server::startup=info" \
  "$bin" ${CRYPTOBOT_ARGS:-} >"$log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 1 200); do
  addr="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||' || true)"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "server exited early:"; cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not report its address:"; cat "$log"; exit 1; }

export HTTP_URL="http://$addr" WS_URL="ws://$addr/api/v1/ws" SERVER_PID="$pid"
"$@"
