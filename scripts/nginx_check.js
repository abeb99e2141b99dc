// REST and WebSocket traffic through nginx with deploy/nginx/cryptobot.conf, over TLS on a port
// other than 443 (scripts/nginx-check.sh starts nginx and the server, then runs this).
// Env: TLS_URL (https://127.0.0.1:PORT), TOKEN, ACCESS_LOG; NODE_PATH finds the `ws` package.
'use strict';
const https = require('https');
const fs = require('fs');
const WebSocket = require('ws');

const base = process.env.TLS_URL;
const token = process.env.TOKEN;
const wsBase = base.replace(/^https:/, 'wss:') + '/api/v1/ws?welcome=1';
const insecure = { rejectUnauthorized: false }; // the check's own self-signed certificate

function get(path, headers = {}) {
  return new Promise((resolve, reject) => {
    https.get(base + path, { ...insecure, headers }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

function expect(cond, what) {
  if (!cond) throw new Error('nginx-check: ' + what);
  console.log('nginx-check: ok: ' + what);
}

// Resolves with the first frame of `type`, or rejects after `ms`.
function frameOfType(socket, type, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} frame within ${ms} ms`)), ms);
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === type) { clearTimeout(timer); resolve(frame); }
    });
  });
}

function refusal(url, options) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, ['cryptobot.v1', 'bearer.' + token], { ...insecure, ...options });
    socket.on('open', () => { socket.close(); reject(new Error('upgrade was accepted')); });
    socket.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    socket.on('error', () => {});
  });
}

async function main() {
  const health = await get('/api/v1/health');
  expect(health.status === 200 && JSON.parse(health.body).status !== undefined, 'GET /api/v1/health through nginx is 200');

  const anonymous = await get('/api/v1/portfolio');
  expect(anonymous.status === 401 && JSON.parse(anonymous.body).code === 'unauthorized', 'REST without a token is 401 unauthorized');
  const authorized = await get('/api/v1/portfolio', { Authorization: 'Bearer ' + token });
  expect(authorized.status === 200, 'REST with the token in Authorization is 200');

  // The browser's own origin, port included: passes only if Host keeps the port ($http_host).
  const socket = new WebSocket(wsBase, ['cryptobot.v1', 'bearer.' + token], { ...insecure, origin: base });
  const welcome = frameOfType(socket, 'welcome', 10000);
  await new Promise((resolve, reject) => { socket.on('open', resolve); socket.on('error', reject); });
  expect(socket.protocol === 'cryptobot.v1', `upgrade from Origin ${base} accepted with sub-protocol cryptobot.v1`);
  expect((await welcome).scopes.includes('trade'), 'welcome frame carries the token\'s scopes');
  const ticker = frameOfType(socket, 'ticker_update', 15000);
  socket.send(JSON.stringify({ type: 'subscribe_ticker', payload: { symbol: 'BTCUSDT' }, id: 1 }));
  expect((await ticker).payload.symbol === 'BTCUSDT', 'ticker_update frames flow through nginx');
  socket.close(1000);

  const foreign = await refusal(wsBase, { origin: 'https://evil.example' });
  expect(foreign.status === 403 && JSON.parse(foreign.body).code === 'origin_not_allowed', 'a foreign Origin gets 403 origin_not_allowed');

  // A token in the query string works but never reaches the access log.
  const queried = new WebSocket(wsBase + '&token=' + token, ['cryptobot.v1'], { ...insecure, origin: base });
  await frameOfType(queried, 'welcome', 10000);
  queried.close(1000);
  await new Promise((resolve) => setTimeout(resolve, 500)); // nginx logs when the request ends
  const log = fs.readFileSync(process.env.ACCESS_LOG, 'utf8');
  expect(log.includes('/api/v1/ws') && !log.includes(token), 'the access log has the WebSocket requests and no token');
}

main().then(() => process.exit(0), (err) => { console.error(err.message || err); process.exit(1); });
