#!/usr/bin/env bash
# Scale-out benchmark: one engine node and NODES gateway nodes sharing events through Redis, each
# gateway loaded by its own cryptobot-load process (CONNECTIONS split evenly), all on loopback.
#   scripts/bench-scaleout.sh NODES CONNECTIONS TICKS_PER_SECOND [SECS]
# Needs Redis (REDIS_URL, default redis://127.0.0.1:6379) and release binaries
# (cargo build --release -p cryptobot-server -p cryptobot-bench). Prints one JSON line per gateway
# node and a summary line. Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:?NODES}" connections="${2:?CONNECTIONS}" ticks="${3:?TICKS_PER_SECOND}" secs="${4:-5}"
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
prefix="bench-scaleout-$$"
symbols="BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT,ADAUSDT,DOGEUSDT,DOTUSDT,LTCUSDT,LINKUSDT"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis-cli -u "$redis_url" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$redis_url" del >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start ROLE NAME: starts a node and prints its address once it listens.
start() {
  local role="$1" name="$2" log="$work/$2.log"
  CRYPTOBOT__SERVER__ROLE="$role" CRYPTOBOT__BUS__BACKEND=redis CRYPTOBOT__BUS__REDIS_URL="$redis_url" \
    CRYPTOBOT__BUS__REDIS_PREFIX="$prefix" CRYPTOBOT__STORAGE__PATH="$work/$name.db" \
    CRYPTOBOT__MARKET__TICKS_PER_SECOND="$ticks" RUST_LOG="warn,cryptobot_server::startup=info" \
    "$target/cryptobot" --config crates/server/config/bench.toml >"$log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$work/$name.pid"
  for _ in $(seq 1 300); do
    if grep -q 'listening on http://' "$log"; then
      grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||' >"$work/$name.addr"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$log" >&2; exit 1
}

start engine engine
for i in $(seq 1 "$nodes"); do start gateway "gw$i"; done
per_node=$(( connections / nodes ))
loads=()
for i in $(seq 1 "$nodes"); do
  addr="$(cat "$work/gw$i.addr")"
  "$target/cryptobot-load" --url "ws://$addr/api/v1/ws" --server-pid "$(cat "$work/gw$i.pid")" \
    --symbols "$symbols" --connections "$per_node" --duration "$secs" --warmup 2 \
    --source-ips 16 --connect-timeout 120 --label "gw$i-of-$nodes" >"$work/load$i.json" &
  loads+=("$!")
done
wait "${loads[@]}"
cat "$work"/load*.json
python3 - "$work" "$nodes" "$connections" "$ticks" <<'PY'
import glob, json, sys
work, nodes, connections, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rows = [json.load(open(p)) for p in sorted(glob.glob(f"{work}/load*.json"))]
ok = sum(r["connections_ok"] for r in rows)
rate = sum(r["messages_per_sec"] for r in rows)
cpu = sum((r["server"]["cpu_ms"] or 0) for r in rows)
msgs = sum(r["messages"] for r in rows)
print(json.dumps({
    "label": f"scaleout_{nodes}_nodes", "gateway_nodes": nodes, "connections": connections,
    "connections_ok": ok, "connections_failed": sum(r["connections_failed"] for r in rows),
    "offered_per_sec": connections * ticks, "delivered_per_sec": rate,
    "p99_ms_worst_node": max(r["latency_ms"]["p99"] for r in rows),
    "p50_ms_worst_node": max(r["latency_ms"]["p50"] for r in rows),
    "gateway_cpu_us_per_message": round(cpu * 1000 / msgs, 2) if msgs else None,
    "gateway_rss_kib_total": sum((r["server"]["rss_kib_after"] or 0) for r in rows),
    "max_connect_secs": max(r["connect_secs"] for r in rows),
}))
PY
