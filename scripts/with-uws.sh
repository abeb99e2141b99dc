#!/usr/bin/env bash
# Runs a command against a freshly started uWebSockets.js reference peer (bench/uws-ref/server.js,
# docs/benchmarks.md) on 127.0.0.1, then stops it. Like scripts/with-server.sh, the command gets
# WS_URL and SERVER_PID, here the node process itself (so /proc shows the reference's own CPU and
# RSS), plus UWS_NATIVE, the native uWS binary the process loaded. Refuses to run the command if the
# package fell back to its pure-JS implementation.
#   TICKS_PER_SECOND=100 scripts/with-uws.sh <command> [args...]
# TICKS_PER_SECOND: ticks per second per symbol (default 5, as with-server.sh); UWS_SYMBOLS: the
# symbols (default the bench profile's ten). Needs `npm ci` in bench/uws-ref (scripts/bench.sh
# does it).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
ref="$root/bench/uws-ref"
symbols="${UWS_SYMBOLS:-BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT,ADAUSDT,DOGEUSDT,DOTUSDT,LTCUSDT,LINKUSDT}"
[ -d "$ref/node_modules/@trufflesuite/uws-js-unofficial" ] ||
  { echo "bench/uws-ref has no node_modules: run (cd bench/uws-ref && npm ci)"; exit 1; }
work="$(mktemp -d)"
log="$work/uws.log"
cleanup() {
  if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

node "$ref/server.js" --port 0 --ticks "${TICKS_PER_SECOND:-5}" --symbols "$symbols" >"$log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 1 100); do
  addr="$(grep -o 'listening on ws://[0-9.:]*' "$log" | head -1 | sed 's|listening on ws://||' || true)"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "uws reference exited early:"; cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "uws reference did not report its address:"; cat "$log"; exit 1; }
native="$(sed -n 's/^uws: native //p' "$log" | head -1)"
[ -n "$native" ] || { echo "uws reference is not running the native build:"; cat "$log"; exit 1; }
# The measured pid must be node itself, and it must have the native binary mapped.
exe="$(readlink "/proc/$pid/exe")"
case "$(basename "$exe")" in
  node*) ;;
  *) echo "pid $pid is $exe, not node"; exit 1 ;;
esac
grep -qF "$native" "/proc/$pid/maps" || { echo "pid $pid does not map $native"; exit 1; }
echo "uws reference: pid $pid ($exe), native $native" >&2

export WS_URL="ws://$addr/api/v1/ws" SERVER_PID="$pid" UWS_NATIVE="$native"
"$@"
