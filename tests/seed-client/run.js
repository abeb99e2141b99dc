// Runs the seed's JavaScript client (seed-client.js, verbatim from the seed document) in Node against
// a cryptobot WebSocket server, and exits 0 only when the expected frames arrived within 10 s.
//
// Usage: node run.js [ws-url]   (or WS_URL=...; default ws://localhost:8080/api/v1/ws)
//        EXPECT=subscription_success,ticker_update,portfolio_update (default) sets the frame types
//        that must arrive; TIMEOUT_MS overrides the 10 s limit.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const NodeWebSocket = require("ws");

const url = process.argv[2] || process.env.WS_URL || "ws://localhost:8080/api/v1/ws";
const expected = new Set(
  (process.env.EXPECT || "subscription_success,ticker_update,portfolio_update")
    .split(",").map((s) => s.trim()).filter(Boolean),
);
const timeoutMs = Number(process.env.TIMEOUT_MS || 10000);
const seen = [];
const calls = { updatePortfolioUI: 0, showTradeNotification: 0, showAlert: 0 };
let firstType;

function finish(code, why) {
  console.log(`${code === 0 ? "PASS" : "FAIL"}: ${why}`);
  console.log(`frames seen: ${JSON.stringify(seen.slice(0, 20))}${seen.length > 20 ? " ..." : ""}`);
  console.log(`seed callbacks: ${JSON.stringify(calls)}`);
  process.exit(code);
}

// The browser globals the seed code expects: WebSocket (pointed at the URL under test) and the three
// UI functions it calls.
class WebSocket extends NodeWebSocket {
  constructor(_seedUrl, protocols) {
    super(url, protocols);
    this.addEventListener("message", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        finish(1, `a frame is not JSON: ${err.message}`);
      }
      if (firstType === undefined) firstType = data.type;
      seen.push(data.type);
      if (data.type === "error") finish(1, `server error frame: ${JSON.stringify(data)}`);
      if (firstType !== "subscription_success" && expected.has("subscription_success")) {
        finish(1, `first frame was ${firstType}, not subscription_success (the seed test reads it first)`);
      }
      if (data.type === "subscription_success" && data.message !== "Subscribed to BTCUSDT") {
        finish(1, `unexpected message ${JSON.stringify(data.message)}`);
      }
      expected.delete(data.type);
      // Let the seed's own listener handle this frame first.
      if (expected.size === 0) setImmediate(() => finish(0, "every expected frame arrived"));
    });
    this.addEventListener("close", (event) => finish(1, `closed early (code ${event.code})`));
    this.addEventListener("error", (event) => finish(1, `socket error: ${event.message || event.type}`));
  }
}

const context = {
  WebSocket,
  console,
  JSON,
  updatePortfolioUI: () => { calls.updatePortfolioUI += 1; },
  showTradeNotification: () => { calls.showTradeNotification += 1; },
  showAlert: () => { calls.showAlert += 1; },
};
vm.createContext(context);
const source = fs.readFileSync(path.join(__dirname, "seed-client.js"), "utf8");
vm.runInContext(source, context, { filename: "seed-client.js" });

setTimeout(() => finish(1, `timed out after ${timeoutMs} ms; still missing: ${[...expected].join(", ")}`), timeoutMs);
