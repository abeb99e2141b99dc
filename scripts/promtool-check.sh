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
  # One REST request first, so the REST histogram has a series; a gateway's follower series
  # appear once it applied its first stream entry (tickers flow several a second). Bounded: 40
  # scrapes, a quarter second apart.
  curl -sSf --max-time 10 -o /dev/null "$HTTP_URL/livez"
  for _ in $(seq 40); do
    body="$(curl -sSf --max-time 10 "$HTTP_URL/metrics")"
    [ "$role" != gateway ] || grep -q '^cryptobot_broker_follow_lag_seconds ' <<<"$body" && break
    sleep 0.25
  done
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
# (a renamed metric must not leave an alert that can never fire); every series docs/operations.md
# lists is exported by some role too, so a documented series cannot silently disappear.
promtool check rules deploy/prometheus/alerts.yml >/dev/null
python3 - "$SCRAPES" deploy/prometheus/alerts.yml deploy/grafana/cryptobot.json docs/operations.md <<'PY'
import json, pathlib, re, sys
scrapes, rules, dashboard, operations = sys.argv[1:5]
exported = set()
for prom in pathlib.Path(scrapes).glob("*.prom"):
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", prom.read_text(), re.M):
        exported.add(name)
        # A histogram is queried through its _bucket, _count and _sum series.
        if kind == "histogram":
            exported |= {name + "_bucket", name + "_count", name + "_sum"}
# Absent until their first value, which these runs never produce: the simulated feed records no
# market update time (the Binance feed does).
exported.add("cryptobot_market_feed_last_update_age_seconds")
names = r"\b((?:cryptobot|process)_[a-z_]*[a-z])\b"
exprs = re.findall(r"expr: *(.*(?:\n +.*)*)", pathlib.Path(rules).read_text())
exprs += [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
wanted = {name for e in exprs for name in re.findall(names, e)}
missing = sorted(wanted - exported)
if missing:
    sys.exit(f"promtool-check: alerts or dashboard query series no role exports: {missing}")
print(f"promtool-check: alerts.yml and the Grafana dashboard query {len(wanted)} series, all exported")
text = pathlib.Path(operations).read_text()
section = text.split("## Metrics per node", 1)[1].split("\n## ", 1)[0]
documented = set(re.findall(r"`" + names[2:-2] + r"(?:[{`])", section))
missing = sorted(documented - exported)
if missing:
    sys.exit(f"promtool-check: docs/operations.md lists series no role exports: {missing}")
print(f"promtool-check: the {len(documented)} series docs/operations.md lists are all exported")
PY