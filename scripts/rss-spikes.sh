#!/usr/bin/env bash
# RSS of a release server across repeated connection spikes (docs/benchmarks.md, "Memory after
# connection spikes"): idle, then ROUNDS spikes of CONNS WebSocket connections held for 3 s each,
# RSS read 3 s after each spike closed. Run once as is (glibc's default arenas) and once with
# MALLOC_ARENA_MAX=1 in the environment: if RSS climbs to a plateau in both, freed memory is kept
# by the allocator, not leaked; a leak grows every round.
#   MALLOC_ARENA_MAX=... ROUNDS=6 CONNS=2000 scripts/rss-spikes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
rounds="${ROUNDS:-6}"
conns="${CONNS:-2000}"
ulimit -n 20000
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
fds() { ls "/proc/$SERVER_PID/fd" | wc -l; }
spikes() {
  set -euo pipefail
  sleep 2
  echo "arena_max=${MALLOC_ARENA_MAX:-default} idle rss_kib=$(rss) fds=$(fds)"
  for round in $(seq "$rounds"); do
    timeout 60 "$target/cryptobot-load" --url "$WS_URL" --connections "$conns" --duration 3 \
      --warmup 0.5 --label "spike-$round" >/dev/null
    sleep 3
    echo "arena_max=${MALLOC_ARENA_MAX:-default} after spike $round rss_kib=$(rss) fds=$(fds)"
  done
}
export -f spikes rss fds
export target rounds conns
# The benchmarks' settings: per-address limits off, so one load generator may open them all.
CRYPTOBOT_BIN="$target/cryptobot" CRYPTOBOT_ARGS="--config crates/server/config/bench.toml" \
  scripts/with-server.sh bash -c spikes
