// The reference peer of `make bench` (docs/benchmarks.md): a uWebSockets.js pub/sub server that
// speaks just enough of docs/protocol.md for cryptobot-load. It ticks N symbols at R ticks/s each
// (symbols take turns, evenly spaced, like cryptobot's simulated market) and publishes every tick
// once to topic `ticker:<SYMBOL>` as a `ticker_update` frame of the same shape as cryptobot's.
// Loopback only.
//   node server.js --port 0 --ticks 100 --symbols BTCUSDT,ETHUSDT,...
// Prints `uws: native <file>` and then `listening on ws://127.0.0.1:<port>/api/v1/ws`; exits 1 if
// the package fell back to its pure-JS implementation.
"use strict";
const fs = require("fs");
const path = require("path");

const PACKAGE = "@trufflesuite/uws-js-unofficial";

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const port = Number(arg("port", "0"));
const ticksPerSecond = Number(arg("ticks", "100"));
const symbols = arg("symbols", "BTCUSDT").split(",").filter(Boolean);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${port}`);
if (!(ticksPerSecond > 0 && ticksPerSecond <= 100000)) throw new Error(`bad --ticks ${ticksPerSecond}`);
if (symbols.length === 0) throw new Error("--symbols: at least one");

// The package returns its pure-JS fallback (built on `ws`) when the native addon does not load,
// with only a warning. Accept only the native addon: it must be the module `require` cached for
// this platform and ABI, and the shared object must be mapped into this process.
const uWS = require(PACKAGE);
const packageDir = path.dirname(require.resolve(`${PACKAGE}/package.json`));
const nativeFile = path.join(
  packageDir,
  "binaries",
  `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
);
const fallbackFile = path.join(packageDir, "dist", "index.js");
const cached = require.cache[nativeFile];
const mapped = fs.readFileSync("/proc/self/maps", "utf8").includes(nativeFile);
if (!cached || cached.exports !== uWS || !mapped || require.cache[fallbackFile]) {
  console.log(`uws: fallback (pure JS), not ${nativeFile}; refusing to start`);
  process.exit(1);
}
console.log(`uws: native ${nativeFile}`);

// Prices: a small random walk per symbol from cryptobot's default initial prices, quoted with
// cryptobot's decimals (2 from 1000 up, 4 from 1 up, 6 below) and trailing zeros dropped, and a
// volume that grows by 1 to 10,000 quote units a tick: frames keep the size of cryptobot's.
const START = { BTCUSDT: 65000, ETHUSDT: 3500, SOLUSDT: 150, BNBUSDT: 600, XRPUSDT: 0.6 };
const markets = symbols.map((symbol) => {
  const price = START[symbol] || 100;
  return { symbol, topic: `ticker:${symbol}`, first: price, price, volume: 0, seq: 0, last: null };
});
const scale = (price) => (price >= 1000 ? 2 : price >= 1 ? 4 : 6);
function decimal(value, decimals) {
  const text = value.toFixed(decimals);
  const trimmed = text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  return trimmed === "-0" ? "0" : trimmed;
}
const bySymbol = new Map(markets.map((m) => [m.symbol, m]));
const epoch = Date.now() * 1000;

// Microseconds since the Unix epoch, from a monotonic clock anchored once at start.
const anchorUs = BigInt(Date.now()) * 1000n;
const anchorNs = process.hrtime.bigint();
const nowUs = () => anchorUs + (process.hrtime.bigint() - anchorNs) / 1000n;

// RFC 3339 with nanoseconds, as cryptobot's `updated_at`.
function isoNanos(us) {
  const ms = Number(us / 1000n);
  const nanos = (us % 1000000n) * 1000n + BigInt(Math.floor(Math.random() * 1000));
  return `${new Date(ms).toISOString().slice(0, 19)}.${String(nanos).padStart(9, "0")}Z`;
}

// One step of one symbol: the frame (the template is a real cryptobot frame, fields in its order)
// is built once and published once to its topic.
function tick(m) {
  m.price *= 1 + (Math.random() - 0.5) * 0.0004;
  m.volume += (1 + Math.random() * 9999) / m.price;
  m.seq += 1;
  const us = nowUs();
  const d = scale(m.price);
  const half = Math.max(m.price * 0.0001, 10 ** -d);
  const change = ((m.price - m.first) / m.first) * 100;
  m.last =
    `{"type":"ticker_update","payload":{"symbol":"${m.symbol}","price":"${decimal(m.price, d)}",` +
    `"bid":"${decimal(m.price - half, d)}","ask":"${decimal(m.price + half, d)}",` +
    `"volume_24h":"${decimal(m.volume, 8)}","change_24h_pct":"${decimal(change, 2)}",` +
    `"updated_at":"${isoNanos(us)}"},"channel":"${m.topic}","timestamp":${us / 1000000n},` +
    `"ts_us":${us},"seq":${m.seq}}`;
  app.publish(m.topic, m.last, false, false);
}

// The pacer, as cryptobot's: `ticksPerSecond` per symbol, one symbol at a time in turn, waking at
// most once a millisecond and emitting the steps due by the elapsed time (at most 1 s of backlog).
const stepsPerSecond = ticksPerSecond * markets.length;
let emitted = 0;
let next = 0;
let started = 0n;
function pace() {
  const due = Math.floor((Number(process.hrtime.bigint() - started) / 1e9) * stepsPerSecond);
  const steps = Math.min(due - emitted, Math.ceil(stepsPerSecond));
  emitted = Math.max(emitted, due);
  for (let i = 0; i < steps; i += 1) {
    tick(markets[next]);
    next = (next + 1) % markets.length;
  }
  setTimeout(pace, Math.max(1, Math.floor(1000 / stepsPerSecond)));
}

function reply(ws, message) {
  ws.send(JSON.stringify(message), false, false);
}

// The latest frame of a symbol, sent right after a subscribe ack (cryptobot's snapshot).
function sendLatest(ws, symbol) {
  const m = bySymbol.get(symbol);
  if (m && m.last) ws.send(m.last, false, false);
}

const channelsOf = (ws) => ws.getTopics().concat(["trades", "portfolio", "alerts"]);

function onMessage(ws, data, isBinary) {
  let msg;
  try {
    msg = isBinary ? null : JSON.parse(Buffer.from(data).toString("utf8"));
  } catch (_) {
    msg = null;
  }
  const id = msg && msg.id !== undefined ? msg.id : null;
  const payload = (msg && msg.payload) || {};
  const error = (code, text) => reply(ws, { type: "error", code, message: text, id });
  switch (msg && msg.type) {
    case "subscribe_ticker": {
      const symbol = payload.symbol || msg.symbol;
      if (!bySymbol.has(symbol)) return error("unknown_symbol", `Unknown symbol ${symbol}`);
      ws.subscribe(`ticker:${symbol}`);
      reply(ws, { type: "subscription_success", message: `Subscribed to ${symbol}`,
        channels: channelsOf(ws), epoch, id });
      return sendLatest(ws, symbol);
    }
    case "subscribe": {
      const channels = Array.isArray(payload.channels) ? payload.channels : [];
      const tickers = channels.filter((c) => typeof c === "string" && c.startsWith("ticker:"));
      const unknown = tickers.find((c) => !bySymbol.has(c.slice(7)));
      if (unknown) return error("unknown_symbol", `Unknown channel ${unknown}`);
      // The ack first, then the snapshots, as cryptobot.
      for (const c of tickers) ws.subscribe(c);
      reply(ws, { type: "subscribed", channels: channelsOf(ws), epoch, id });
      for (const c of tickers) sendLatest(ws, c.slice(7));
      return undefined;
    }
    case "ping": {
      const us = nowUs();
      return ws.send(`{"type":"pong","timestamp":${us / 1000000n},"ts_us":${us},"id":${JSON.stringify(id)}}`, false, false);
    }
    default:
      return error("unknown_type", "Unknown message type");
  }
}

const app = uWS.App().ws("/api/v1/ws", {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  idleTimeout: 120,
  message: onMessage,
});

app.listen("127.0.0.1", port, (listenSocket) => {
  if (!listenSocket) {
    console.log(`cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.log(`listening on ws://127.0.0.1:${uWS.us_socket_local_port(listenSocket)}/api/v1/ws pid ${process.pid}`);
  started = process.hrtime.bigint();
  pace();
});

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
