#!/usr/bin/env bash
# `make bench`: the standard WebSocket scenarios of docs/benchmarks.md against a release build with
# the bench profile (crates/server/config/bench.toml). Each scenario starts a fresh server, runs
# cryptobot-load against it for BENCH_SECS seconds, and prints one JSON line; the results are
# appended as rows to the table in docs/benchmarks.md (earlier rows are kept).
#   scripts/bench.sh            all scenarios
#   scripts/bench.sh smoke      a few seconds, asserts only that messages flow (CI)
#   BENCH_SCENARIOS="fanout_1k stall" scripts/bench.sh    a subset
#   BENCH_DOC=- scripts/bench.sh   print the rows instead of appending them to docs/benchmarks.md
#   BENCH_REF_SECS=3               a shorter window for the ref_* scenarios (default 10)
#   BENCH_SLOW_WARMUP=40           a longer warm-up for slow_reader (default 20 s)
# The ref_* scenarios run the same cryptobot-load invocation against cryptobot and then against the
# uWebSockets.js reference peer (bench/uws-ref, `npm ci` done here; scripts/with-uws.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${BENCH_PROFILE:-release}"
secs="${BENCH_SECS:-5}"
# The window of the ref_* scenarios (10 s, as issue 14's comparison).
ref_secs="${BENCH_REF_SECS:-10}"
# The warm-up of slow_reader, while the buffers between server and slow reader fill (default 20 s).
slow_warmup="${BENCH_SLOW_WARMUP:-20}"
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

# ref_scenario NAME TICKS_PER_SECOND_PER_SYMBOL [cryptobot-load options...]: the same invocation
# against cryptobot (label NAME@cryptobot), then against the uWS reference (NAME@uws), each with
# the server's own CPU and RSS from /proc.
ref_scenario() {
  local name="$1" ticks="$2" server wrapper
  shift 2
  for server in cryptobot uws; do
    case "$server" in
      cryptobot) wrapper=scripts/with-server.sh ;;
      uws) wrapper=scripts/with-uws.sh ;;
    esac
    echo "== $name against $server: $ticks ticks/s per symbol, $*" >&2
    TICKS_PER_SECOND="$ticks" "$wrapper" sh -c \
      "\"$load\" --url \"\$WS_URL\" --server-pid \"\$SERVER_PID\" --symbols $symbols --label $name@$server $*" \
      | tee -a "$results"
    sleep 2
  done
}

if [ "${1:-}" = smoke ]; then
  scenario smoke 20 --connections 50 --duration 2 --warmup 0.5 --min-messages 100
  exit 0
fi

wanted="${BENCH_SCENARIOS:-fanout_1k fanout_1k_200 fanout_1k_400 fanout_10k conn_19k idle_storm_10k stall scale_100 scale_1k scale_5k ref_1k ref_1k_600 slow_reader}"
case " $wanted " in
  *" ref_"*)
    command -v node >/dev/null || { echo "the ref_* scenarios need node and npm" >&2; exit 2; }
    (cd bench/uws-ref && npm ci --no-audit --no-fund)
    ;;
esac
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
    stall) scenario stall 100 --connections 1000 --stall 50 --duration 20 ;;
    # Scaling at 10 messages/s per connection (fanout_10k is the 10,000 point of this series).
    scale_100) scenario scale_100 10 --connections 100 ;;
    scale_1k) scenario scale_1k 10 --connections 1000 ;;
    scale_5k) scenario scale_5k 10 --connections 5000 --source-ips 2 ;;
    # fanout_1k for 10 s, against cryptobot and then the uWebSockets.js reference (100,000 msg/s
    # offered), and the same at 600 ticks/s per symbol (600,000 msg/s offered).
    ref_1k) ref_scenario ref_1k 100 --connections 1000 --duration "$ref_secs" --offered-per-sec 100000 ;;
    ref_1k_600) ref_scenario ref_1k_600 600 --connections 1000 --duration "$ref_secs" --offered-per-sec 600000 ;;
    # One client reading at most 40 frames/s, subscribed to all ten symbols at 11 ticks/s (110
    # frames/s offered) and to trades; 40 trades are POSTed at 4/s in the 10 s window and each
    # must reach it (up to 30 s of drain after the window). No other connections. The 20 s of
    # warm-up let the buffers between server and reader fill, so the window sees the settled age.
    slow_reader) scenario slow_reader 11 --connections 0 --slow-readers 1 --slow-rate 40 \
      --channels trades --trades 40 --trade-rate 4 --trade-amount 10 --warmup "$slow_warmup" --duration 10 \
      --offered-per-sec 110 ;;
    # The same reader with a 4 KiB receive buffer: what a client that wants fresh prices while
    # reading slowly does; the server-side buffers then bound the age.
    slow_reader_4k) scenario slow_reader_4k 11 --connections 0 --slow-readers 1 --slow-rate 40 \
      --slow-rcvbuf 4096 --channels trades --trades 40 --trade-rate 4 --trade-amount 10 \
      --warmup "$slow_warmup" --duration 10 --offered-per-sec 110 ;;
    *) echo "unknown scenario $name" >&2; exit 2 ;;
  esac
done

command="BENCH_SECS=$secs"
[ "$ref_secs" = 10 ] || command="$command, BENCH_REF_SECS=$ref_secs"
[ "$slow_warmup" = 20 ] || command="$command, BENCH_SLOW_WARMUP=$slow_warmup"
python3 scripts/bench_table.py "$results" "${BENCH_DOC:-docs/benchmarks.md}" "scripts/bench.sh ($command)"
