#!/usr/bin/env bash
# Runs `promtool check metrics` on the /metrics of every role: `all` (embedded defaults), then an
# `engine` and a `gateway` following it through Redis (REDIS_URL, default redis://127.0.0.1:6379,
# under a prefix of their own). promtool's lint (HELP, TYPE, counter and unit suffixes) must report
# nothing. Every server is stopped by scripts/with-server.sh, on failure too.
# Needs promtool (Debian package prometheus), curl and a reachable Redis.
#   scripts/promtool-check.sh         (CRYPTOBOT_BIN: the binary, default target/debug/cryptobot)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promtool-check: promtool not found (apt-get install prometheus)"; exit 1; }
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
redis-cli -u "$redis_url" ping >/dev/null 2>&1 || { echo "promtool-check: no Redis at $redis_url"; exit 1; }

# Called by with-server.sh with HTTP_URL set: scrapes the node and lints what it serves.
if [ "${1:-}" = "--scrape" ]; then
  role="$2"
  shift 2
  body="$(curl -sSf --max-time 10 "$HTTP_URL/metrics")"
  if ! report="$(promtool check metrics <<<"$body" 2>&1)" || [ -n "$report" ]; then
    echo "promtool-check: the $role node's /metrics fails promtool:"
    echo "$report"
    exit 1
  fi
  grep -q "^cryptobot_build_info{role=\"$role\",version=\"[^\"]*\"} 1$" <<<"$body" \
    || { echo "promtool-check: the $role node exports no cryptobot_build_info for its role"; exit 1; }
  echo "promtool-check: $role ok ($(grep -c '^# TYPE ' <<<"$body") families)"
  if [ -n "${SCRAPES:-}" ]; then printf '%s\n' "$body" >"$SCRAPES/$role.prom"; fi
  # The rest of the command line runs next, while this node is still up.
  if [ "$#" -gt 0 ]; then "$@"; fi
  exit 0
fi

self="scripts/promtool-check.sh"
# What every role served, for the check of the alert rules and the dashboard below.
SCRAPES="$(mktemp -d)"
export SCRAPES
CRYPTOBOT__SERVER__ROLE=all scripts/with-server.sh "$self" --scrape all

prefix="promtool-check-$$-$RANDOM"
export CRYPTOBOT__BUS__BACKEND=redis CRYPTOBOT__BUS__REDIS_URL="$redis_url" CRYPTOBOT__BUS__REDIS_PREFIX="$prefix"
cleanup() {
  rm -rf "$SCRAPES"
  redis-cli -u "$redis_url" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$redis_url" del >/dev/null || true
}
trap cleanup EXIT
# The gateway starts while the engine runs (nested: each with-server.sh stops its own node).
CRYPTOBOT__SERVER__ROLE=engine scripts/with-server.sh "$self" --scrape engine \
  env CRYPTOBOT__SERVER__ROLE=gateway scripts/with-server.sh "$self" --scrape gateway

# The alert rules are valid, and they and the Grafana dashboard query only series some role exports
# (a renamed metric must not leave an alert that can never fire).
promtool check rules deploy/prometheus/alerts.yml >/dev/null
python3 - "$SCRAPES" deploy/prometheus/alerts.yml deploy/grafana/cryptobot.json <<'PY'
import json, pathlib, re, sys
scrapes, rules, dashboard = sys.argv[1:4]
exported = set()
for prom in pathlib.Path(scrapes).glob("*.prom"):
    exported |= set(re.findall(r"^# TYPE (\S+) ", prom.read_text(), re.M))
exprs = re.findall(r"expr: *(.*(?:\n +.*)*)", pathlib.Path(rules).read_text())
exprs += [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
wanted = {name for e in exprs for name in re.findall(r"\b((?:cryptobot|process)_[a-z_]+)\b", e)}
missing = sorted(wanted - exported)
if missing:
    sys.exit(f"promtool-check: alerts or dashboard query series no role exports: {missing}")
print(f"promtool-check: alerts.yml and the Grafana dashboard query {len(wanted)} series, all exported")
PY