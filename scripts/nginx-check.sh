#!/usr/bin/env bash
# Checks deploy/nginx/cryptobot.conf, the nginx config the docs show: docs/security.md holds it
# verbatim, `nginx -t` accepts it, and REST and WebSocket traffic pass through it over TLS on a
# port other than 443 (where `Host $host` once dropped the port and every upgrade got 403).
# Needs nginx, openssl, node and tests/seed-client's node_modules (make seed-client installs them).
#   scripts/nginx-check.sh            (CRYPTOBOT_BIN: the binary, default target/debug/cryptobot)
set -euo pipefail
cd "$(dirname "$0")/.."

conf=deploy/nginx/cryptobot.conf
python3 - "$conf" docs/security.md <<'PY'
import sys
conf, doc = open(sys.argv[1]).read(), open(sys.argv[2]).read()
marker = "<!-- deploy/nginx/cryptobot.conf -->\n```nginx\n"
start = doc.find(marker)
if start < 0:
    sys.exit(f"{sys.argv[2]}: no '{marker.splitlines()[0]}' block")
body = doc[start + len(marker):]
body = body[:body.find("```")]
if body != conf:
    sys.exit(f"{sys.argv[2]}: the nginx block differs from {sys.argv[1]}; copy the file into the doc")
print(f"nginx-check: {sys.argv[2]} shows {sys.argv[1]} verbatim")
PY

check_dir="$(mktemp -d)"
chmod 755 "$check_dir"
cleanup() {
  if [ -f "$check_dir/nginx.pid" ]; then kill -QUIT "$(cat "$check_dir/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$check_dir"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$check_dir/key.pem" -out "$check_dir/cert.pem" 2>/dev/null

# A free port for nginx's TLS listener (not 443: the port must survive into Host).
tls_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

# The documented file with this machine's addresses: its own listener, certificate and log, and
# the one node started below in the upstream. Everything else is checked as written.
sed -e "s|listen 443 ssl;|listen 127.0.0.1:${tls_port} ssl;|" \
    -e "s|/etc/letsencrypt/live/bot.example.com/fullchain.pem|$check_dir/cert.pem|" \
    -e "s|/etc/letsencrypt/live/bot.example.com/privkey.pem|$check_dir/key.pem|" \
    -e "s|/var/log/nginx/cryptobot.log|$check_dir/access.log|" \
    -e "/server 127.0.0.1:8082;/d" \
    -e "s|server 127.0.0.1:8081;|server @NODE@;|" \
    "$conf" >"$check_dir/cryptobot.conf.in"
grep -q "listen 127.0.0.1:${tls_port} ssl;" "$check_dir/cryptobot.conf.in" && grep -q "server @NODE@;" "$check_dir/cryptobot.conf.in" \
  || { echo "nginx-check: $conf no longer has the lines this script rewrites"; exit 1; }
for dir in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$check_dir/$dir"; chmod 777 "$check_dir/$dir"; done
cat >"$check_dir/nginx.conf" <<CONF
pid $check_dir/nginx.pid;
error_log $check_dir/error.log info;
events { worker_connections 256; }
http {
    client_body_temp_path $check_dir/client_body;
    proxy_temp_path $check_dir/proxy;
    fastcgi_temp_path $check_dir/fastcgi;
    uwsgi_temp_path $check_dir/uwsgi;
    scgi_temp_path $check_dir/scgi;
    include $check_dir/cryptobot.conf;
}
CONF

# The production example as the server's config; the token comes from the environment, as it
# must: without one the server refuses to start.
prod=deploy/cryptobot.prod.toml
bin="${CRYPTOBOT_BIN:-${CARGO_TARGET_DIR:-target}/debug/cryptobot}"
if refusal="$(CRYPTOBOT__SERVER__PORT=0 CRYPTOBOT__STORAGE__PATH="$check_dir/refused.db" timeout 20 "$bin" --config "$prod" 2>&1)"; then
  echo "nginx-check: $prod started without any auth token"; exit 1
fi
grep -Eq "auth(\.|: )tokens" <<<"$refusal" || { echo "nginx-check: $prod without a token did not name auth tokens:"; echo "$refusal"; exit 1; }
echo "nginx-check: $prod without a token is refused: $(tail -1 <<<"$refusal")"
export CRYPTOBOT__AUTH__TOKENS='[{"name":"nginx-check","token":"nginx-check-token-0123456789","scopes":["read","trade"]}]'

run_through_nginx() {
  set -euo pipefail
  local node="${HTTP_URL#http://}"
  sed "s|@NODE@|$node|" "$check_dir/cryptobot.conf.in" >"$check_dir/cryptobot.conf"
  nginx -t -q -c "$check_dir/nginx.conf" -p "$check_dir"
  echo "nginx-check: nginx -t accepts $conf"
  nginx -c "$check_dir/nginx.conf" -p "$check_dir"
  for _ in $(seq 50); do [ -s "$check_dir/nginx.pid" ] && break; sleep 0.1; done
  NODE_PATH="$PWD/tests/seed-client/node_modules" TLS_URL="https://127.0.0.1:${tls_port}" \
    TOKEN="nginx-check-token-0123456789" ACCESS_LOG="$check_dir/access.log" \
    timeout 60 node scripts/nginx_check.js
}
export -f run_through_nginx
export check_dir tls_port conf
CRYPTOBOT_ARGS="--config $prod" scripts/with-server.sh bash -c run_through_nginx
