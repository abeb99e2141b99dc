#!/usr/bin/env bash
# `make bench`: the standard WebSocket scenarios of docs/benchmarks.md against a release build with
# the bench profile (crates/server/config/bench.toml). Each scenario starts a fresh server, runs
# cryptobot-load against it for BENCH_SECS seconds, and prints one JSON line; the results are
# appended as rows to the table in docs/benchmarks.md (earlier rows are kept).
#   scripts/bench.sh            all scenarios
#   scripts/bench.sh smoke      a few seconds, asserts only that messages flow (CI)
#   BENCH_SCENARIOS="fanout_1k stall" scripts/bench.sh    a subset
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${BENCH_PROFILE:-release}"
secs="${BENCH_SECS:-5}"
symbols="BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT,ADAUSDT,DOGEUSDT,DOTUSDT,LTCUSDT,LINKUSDT"

if [ "$profile" = release ]; then
  cargo build --locked --release -p cryptobot-server -p cryptobot-bench
else
  cargo build --locked -p cryptobot-server -p cryptobot-bench
fi
export CRYPTOBOT_BIN="$CARGO_TARGET_DIR/$profile/cryptobot"
load="$CARGO_TARGET_DIR/$profile/cryptobot-load"
export CRYPTOBOT_ARGS="--config crates/server/config/bench.toml"
export RUST_LOG="warn,cryptobot_server::startup=info"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# scenario NAME TICKS_PER_SECOND_PER_SYMBOL [cryptobot-load options...]
scenario() {
  local name="$1" ticks="$2"
  shift 2
  echo "== $name: $ticks ticks/s per symbol, $*" >&2
  TICKS_PER_SECOND="$ticks" scripts/with-server.sh sh -c \
    "\"$load\" --url \"\$WS_URL\" --server-pid \"\$SERVER_PID\" --symbols $symbols --label $name --duration $secs $*" \
    | tee -a "$results"
  # Let the kernel recycle the closed sockets' ports before the next storm.
  sleep 2
}

if [ "${1:-}" = smoke ]; then
  scenario smoke 20 --connections 50 --duration 2 --warmup 0.5 --min-messages 100
  exit 0
fi

wanted="${BENCH_SCENARIOS:-fanout_1k fanout_1k_200 fanout_1k_400 fanout_10k conn_19k idle_storm_10k stall scale_100 scale_1k scale_5k}"
for name in $wanted; do
  case "$name" in
    # 1,000 connections over 10 symbols, 100 ticks/s each: 100,000 messages/s offered.
    fanout_1k) scenario fanout_1k 100 --connections 1000 ;;
    # The same, with the offered load raised to 200,000 and 400,000 messages/s.
    fanout_1k_200) scenario fanout_1k_200 200 --connections 1000 ;;
    fanout_1k_400) scenario fanout_1k_400 400 --connections 1000 ;;
    # 10,000 connections, 10 ticks/s per symbol: 100,000 messages/s offered.
    fanout_10k) scenario fanout_10k 10 --connections 10000 --source-ips 4 ;;
    # 19,000 connections, one update per second each.
    conn_19k) scenario conn_19k 1 --connections 19000 --source-ips 8 --warmup 2 ;;
    # 10,000 connections opened at once and left idle: storm time and RSS per connection.
    idle_storm_10k) scenario idle_storm_10k 0.01 --connections 10000 --source-ips 4 --connect-concurrency 1000 ;;
    # fanout_1k plus 50 clients that subscribe and never read (a 4 KiB receive window each);
    # a longer window, so their sends block and they are closed with 1008 within it.
    stall) scenario stall 100 --connections 1000 --stall 50 --duration 12 ;;
    # Scaling at 10 messages/s per connection (fanout_10k is the 10,000 point of this series).
    scale_100) scenario scale_100 10 --connections 100 ;;
    scale_1k) scenario scale_1k 10 --connections 1000 ;;
    scale_5k) scenario scale_5k 10 --connections 5000 --source-ips 2 ;;
    *) echo "unknown scenario $name" >&2; exit 2 ;;
  esac
done

python3 scripts/bench_table.py "$results" docs/benchmarks.md "scripts/bench.sh (BENCH_SECS=$secs)"
