// Measures manual-trade throughput and latency over REST against a running server: every trade is
// committed to SQLite (WAL, synchronous=FULL) before it is acknowledged, so this is the durable
// path. Bounded in time and count; loopback only.
//   CLIENTS=4 DURATION_SECS=5 node scripts/bench-trades.mjs [http://127.0.0.1:8080]
// (under scripts/with-server.sh the URL comes from HTTP_URL)
const base = process.argv[2] || process.env.HTTP_URL || "http://127.0.0.1:8080";
const clients = Number(process.env.CLIENTS || 4);
const seconds = Number(process.env.DURATION_SECS || 5);
const maxTrades = 20000;

const latencies = [];
let failed = 0;
const deadline = performance.now() + seconds * 1000;
const run = `${Date.now()}`;

async function client(n) {
  for (let i = 0; performance.now() < deadline && latencies.length < maxTrades; i++) {
    const body = JSON.stringify({ symbol: "BTCUSDT", side: "buy", amount: "2", client_order_id: `bench-${run}-${n}-${i}` });
    const started = performance.now();
    const response = await fetch(`${base}/api/v1/trades`, { method: "POST", headers: { "content-type": "application/json" }, body });
    await response.arrayBuffer();
    if (response.status === 201) latencies.push(performance.now() - started);
    else failed++;
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: clients }, (_, n) => client(n)));
const elapsed = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]?.toFixed(2);
console.log(JSON.stringify({
  clients, seconds: Number(elapsed.toFixed(2)), trades: latencies.length, failed,
  trades_per_sec: Math.round(latencies.length / elapsed), p50_ms: pct(50), p99_ms: pct(99), max_ms: latencies.at(-1)?.toFixed(2),
}));
