// cryptobot dashboard: a plain ES module speaking the public WebSocket protocol (docs/protocol.md)
// and reading the REST API once per (re)connect to fill gaps. No build step, no external assets.

const $ = (selector) => document.querySelector(selector);
const SPARK_POINTS = 60;
const VALUE_POINTS = 240;
const FEED_ROWS = 50;
const TOAST_MS = 15000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const state = {
  socket: null,
  backoffMs: BACKOFF_MIN_MS,
  nextId: 1,
  pending: new Map(),          // request id -> callback for the direct reply
  symbols: [],
  subscribed: new Set(),       // symbols whose ticker channel the user wants
  prices: new Map(),           // symbol -> recent prices for the sparkline
  values: [],                  // total value history for the chart
  tradeIds: new Set(),         // trade ids already shown, so a reconnect never duplicates rows
  tradeRows: FEED_ROWS,        // rows the trade list keeps; each older page loaded adds its own
  olderTrades: false,          // the server has trades older than the last row shown
  epoch: null,                 // server run the seq values below belong to
  lastSeq: new Map(),          // channel -> highest seq received, sent in `resume` on reconnect
  canTrade: true,
  refusedUpgrades: 0,          // failed upgrades in a row while the server answered HTTP
  token: sessionStorage.getItem("cryptobot.token") || "",
  // The code of the last refused upgrade (POST /api/v1/ws), "" once a socket opens.
  refusal: "",
  // True from a dropped connection until the next price.
  pricesStale: false,
  orders: new Map(),           // open order id -> [order, seq of the update that set it]
  bot: null,                   // the auto-trading state {state, changed_at, changed_by}
  botSeq: -1,                  // seq of the `bot` channel it is current at
  chart: { symbol: null, interval: "1m", candles: [], markers: [], updates: 0 },
};
const CHART_CANDLES = 120;
const CHART_MARKERS = 200;

function setStatus(kind, text) {
  const el = $("#status");
  el.className = `status status-${kind}`;
  el.textContent = text;
}

// Prices below 1 (e.g. XRP) need more digits than money does.
function fmt(value, digits = 2) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  const abs = Math.abs(n);
  const d = abs !== 0 && abs < 1 ? 6 : digits;
  return n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

// Money and percentages: always two decimals.
function fmtFixed(value) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function signClass(value) {
  const n = Number(value);
  return n > 0 ? "up" : n < 0 ? "down" : "";
}

function polyline(values, width, height) {
  if (values.length < 2) return "";
  const min = Math.min(...values), max = Math.max(...values);
  const span = max - min || 1;
  return values
    .map((v, i) => `${((i / (values.length - 1)) * width).toFixed(1)},${(height - ((v - min) / span) * height).toFixed(1)}`)
    .join(" ");
}

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function getJson(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) {
    askForToken();
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// ---------- tickers ----------

function tickerRow(symbol) {
  let row = document.getElementById(`ticker-${symbol}`);
  if (row) return row;
  row = document.createElement("tr");
  row.id = `ticker-${symbol}`;
  row.dataset.symbol = symbol;
  row.innerHTML = `<th scope="row">${symbol}</th><td class="price">–</td><td class="change">–</td>
    <td><svg class="spark" viewBox="0 0 60 20" preserveAspectRatio="none" aria-hidden="true"><polyline points=""/></svg></td>
    <td><button type="button" class="small ghost toggle" aria-pressed="true" aria-label="Live updates for ${symbol}">Live</button></td>`;
  row.querySelector(".toggle").addEventListener("click", () => toggleSymbol(symbol));
  $("#tickers tbody").append(row);
  return row;
}

// While disconnected the prices on screen are the last ones before the drop: say so, until a
// new price arrives.
function markPricesStale(stale) {
  if (state.pricesStale === stale) return;
  state.pricesStale = stale;
  $("#tickers").classList.toggle("stale", stale);
  $("#tickers-title").textContent = stale ? "Market (stale: not connected)" : "Market";
}

function showTicker(ticker) {
  markPricesStale(false);
  const row = tickerRow(ticker.symbol);
  row.querySelector(".price").textContent = fmt(ticker.price);
  const change = row.querySelector(".change");
  change.textContent = `${fmtFixed(ticker.change_24h_pct)} %`;
  change.className = `change ${signClass(ticker.change_24h_pct)}`;
  const history = state.prices.get(ticker.symbol) || [];
  history.push(Number(ticker.price));
  if (history.length > SPARK_POINTS) history.shift();
  state.prices.set(ticker.symbol, history);
  row.querySelector(".spark polyline").setAttribute("points", polyline(history, 60, 20));
}

function toggleSymbol(symbol) {
  const row = tickerRow(symbol);
  const button = row.querySelector(".toggle");
  const channel = `ticker:${symbol}`;
  if (state.subscribed.has(symbol)) {
    state.subscribed.delete(symbol);
    send("unsubscribe", { channels: [channel] });
    button.textContent = "Paused";
    button.setAttribute("aria-pressed", "false");
    row.classList.add("muted");
  } else {
    state.subscribed.add(symbol);
    send("subscribe", { channels: [channel] });
    button.textContent = "Live";
    button.setAttribute("aria-pressed", "true");
    row.classList.remove("muted");
  }
}

// ---------- portfolio ----------

function showPortfolio(summary) {
  $("#cash").textContent = fmtFixed(summary.cash);
  $("#total-value").textContent = fmtFixed(summary.total_value);
  const realized = $("#realized-pnl");
  realized.textContent = fmtFixed(summary.realized_pnl);
  realized.className = signClass(summary.realized_pnl);
  const unrealized = $("#unrealized-pnl");
  unrealized.textContent = fmtFixed(summary.unrealized_pnl);
  unrealized.className = signClass(summary.unrealized_pnl);
  state.values.push(Number(summary.total_value));
  if (state.values.length > VALUE_POINTS) state.values.shift();
  $("#value-chart polyline").setAttribute("points", polyline(state.values, 300, 60));

  const body = $("#positions tbody");
  const focused = document.activeElement && body.contains(document.activeElement);
  if (focused) return; // do not rebuild the rows under the user's cursor while they edit levels
  body.replaceChildren(...summary.positions.map(positionRow));
  $("#no-positions").hidden = summary.positions.length > 0;
}

function positionRow(p) {
  const row = document.createElement("tr");
  row.dataset.symbol = p.symbol;
  // data-label: at phone width each row is a small card and every value carries its column's name.
  row.innerHTML = `<th scope="row">${p.symbol}</th><td data-label="Quantity">${p.quantity}</td>
    <td data-label="Entry">${fmt(p.avg_entry_price)}</td><td data-label="Value">${fmtFixed(p.market_value)}</td>
    <td data-label="PnL" class="${signClass(p.unrealized_pnl)}">${fmtFixed(p.unrealized_pnl)}</td>
    <td data-label="Stop-loss / take-profit"><form class="levels">
      <label class="sr-only" for="sl-${p.symbol}">Stop-loss for ${p.symbol}</label>
      <input id="sl-${p.symbol}" name="stop_loss" inputmode="decimal" placeholder="stop" value="${p.stop_loss ?? ""}">
      <label class="sr-only" for="tp-${p.symbol}">Take-profit for ${p.symbol}</label>
      <input id="tp-${p.symbol}" name="take_profit" inputmode="decimal" placeholder="take" value="${p.take_profit ?? ""}">
      <button type="submit" class="small">Set</button></form></td>
    <td data-label="Exit"><button type="button" class="small danger exit" title="Force exit: sell all of ${p.symbol} at market" aria-label="Force exit ${p.symbol}"${state.canTrade ? "" : " disabled"}>Exit</button></td>`;
  row.querySelector(".exit").addEventListener("click", (event) => forceExit(p.symbol, event.currentTarget));
  row.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const level = (name) => (form.elements[name].value.trim() === "" ? null : form.elements[name].value.trim());
    request("update_position", { symbol: p.symbol, stop_loss: level("stop_loss"), take_profit: level("take_profit") }, (reply) => {
      if (reply.type === "error") toast({ alert_type: "update_position", message: reply.error, severity: "warning" });
      else toast({ alert_type: "position_updated", message: `${p.symbol} levels saved`, severity: "info" });
      form.querySelector("button").blur();
    });
  });
  return row;
}

// Sells the whole position (its resting sells are canceled first); the trade and the portfolio
// arrive as pushed events like any other.
function forceExit(symbol, button) {
  if (!window.confirm(`Sell all of ${symbol} at market now? Its resting sell orders are canceled first.`)) return;
  button.disabled = true;
  request("force_exit", { symbol, client_order_id: newClientOrderId() }, (reply) => {
    if (reply.type === "error") {
      button.disabled = !state.canTrade;
      toast({ alert_type: "force_exit", message: `${reply.code}: ${reply.error}`, severity: "warning" });
      return;
    }
    const { trade, canceled_orders: canceled } = reply.payload;
    const orders = canceled.length ? `, ${canceled.length} order(s) canceled` : "";
    toast({ alert_type: "force_exit", message: `sold ${trade.quantity} ${symbol} @ ${fmt(trade.price)}${orders}`, severity: "info" });
    for (const order of canceled) applyOrder(order, Number.MAX_SAFE_INTEGER - 1);
  });
}

// ---------- bot state (pause / resume) ----------

// The state from a reply or a `bot` event; an older `seq` than the one shown is ignored.
function showBotState(bot, seq) {
  if (seq !== undefined && seq < state.botSeq) return;
  if (seq !== undefined) state.botSeq = seq;
  state.bot = bot;
  const paused = bot.state === "paused";
  const who = bot.changed_by ? ` by ${bot.changed_by}` : "";
  const when = bot.changed_at ? ` ${new Date(bot.changed_at).toLocaleTimeString()}` : "";
  const since = bot.changed_at || bot.changed_by ? ` (since${when}${who})` : "";
  $("#bot").dataset.state = bot.state;
  $("#bot-state").textContent = `auto-trading: ${bot.state}${since}`;
  const toggle = $("#bot-toggle");
  toggle.textContent = paused ? "Resume bot" : "Pause bot";
  toggle.setAttribute("aria-pressed", String(paused));
  toggle.disabled = !state.canTrade;
}

function setupBotToggle() {
  const toggle = $("#bot-toggle");
  toggle.addEventListener("click", () => {
    if (!state.bot) return;
    toggle.disabled = true;
    const type = state.bot.state === "paused" ? "resume_trading" : "pause_trading";
    request(type, undefined, (reply) => {
      toggle.disabled = !state.canTrade;
      if (reply.type === "error") {
        toast({ alert_type: type, message: `${reply.code}: ${reply.error}`, severity: "warning" });
        return;
      }
      showBotState(reply.payload);
    });
  });
}

// ---------- performance ----------

const DAILY_DAYS = 30;
const PERFORMANCE_DELAY_MS = 200;
let performanceTimer = null;

function winRate(value) {
  return value === null || value === undefined ? "–" : `${fmtFixed(Number(value) * 100)} %`;
}

function fillStats(row, stats) {
  row.querySelector(".trades").textContent = String(stats.trades);
  const pnl = row.querySelector(".pnl");
  pnl.textContent = fmtFixed(stats.realized_pnl);
  pnl.className = `pnl ${signClass(stats.realized_pnl)}`;
  row.querySelector(".fees").textContent = fmtFixed(stats.fees);
  if (row.querySelector(".win-rate")) row.querySelector(".win-rate").textContent = winRate(stats.win_rate);
  if (row.querySelector(".volume")) row.querySelector(".volume").textContent = fmtFixed(stats.volume);
}

function performanceRow(stats) {
  const row = document.createElement("tr");
  row.dataset.symbol = stats.symbol;
  row.innerHTML = `<th scope="row">${stats.symbol}</th><td class="trades"></td><td class="pnl"></td><td class="fees"></td><td class="win-rate"></td><td class="volume"></td>`;
  fillStats(row, stats);
  return row;
}

function dailyRow(day) {
  const row = document.createElement("tr");
  row.dataset.date = day.date;
  row.innerHTML = `<th scope="row"><time>${day.date}</time></th><td class="trades"></td><td class="pnl"></td><td class="fees"></td>`;
  fillStats(row, day);
  return row;
}

async function loadPerformance() {
  try {
    const [performance, daily] = await Promise.all([
      getJson("/api/v1/performance"),
      getJson(`/api/v1/profit/daily?days=${DAILY_DAYS}`),
    ]);
    $("#performance tbody").replaceChildren(...performance.symbols.map(performanceRow));
    fillStats($("#performance-total"), performance.total);
    $("#no-performance").hidden = performance.total.trades > 0;
    $("#daily-profit tbody").replaceChildren(...daily.map(dailyRow));
  } catch (err) {
    console.warn("could not load performance", err.message);
  }
}

// Trades come in bursts (a stop-loss, the auto-trader): one reload after the burst is enough.
function refreshPerformanceSoon() {
  clearTimeout(performanceTimer);
  performanceTimer = setTimeout(loadPerformance, PERFORMANCE_DELAY_MS);
}

// ---------- feeds ----------

function prependCapped(list, item, rows = FEED_ROWS) {
  list.prepend(item);
  while (list.children.length > rows) {
    const dropped = list.lastElementChild;
    dropped.remove();
    if (list.id === "trade-feed") {
      // The row can come back with the older pages, so it is no longer "shown".
      state.tradeIds.delete(dropped.dataset.tradeId);
      setOlderTrades(true);
    }
  }
}

function setOlderTrades(more) {
  state.olderTrades = more;
  $("#trades-older").hidden = !more;
}

// A page of trades and whether the server has more (its `Link: <...>; rel="next"` header).
async function getTradePage(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) {
    askForToken();
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  const more = /rel="next"/.test(response.headers.get("link") ?? "");
  return { trades: await response.json(), more };
}

// The next page back in time, below the oldest row shown (cursor `before_id`, docs/api.md).
async function loadOlderTrades() {
  const button = $("#trades-older");
  const ids = [...$("#trade-feed").children].map((li) => Number(li.dataset.tradeId)).filter(Number.isFinite);
  if (!ids.length) return;
  button.disabled = true;
  try {
    const { trades, more } = await getTradePage(`/api/v1/trades?limit=${FEED_ROWS}&before_id=${Math.min(...ids)}`);
    state.tradeRows += trades.length;
    trades.forEach((trade) => showTrade(trade, "append"));
    setOlderTrades(more);
  } catch (err) {
    console.warn("could not load older trades", err.message);
  } finally {
    button.disabled = false;
  }
}

function showTrade(trade, where = "prepend") {
  const key = trade.id ?? `${trade.symbol}-${trade.purchased_at ?? trade.executed_at}-${trade.quantity}`;
  if (state.tradeIds.has(String(key))) return;
  state.tradeIds.add(String(key));
  const side = trade.type ?? trade.side;
  const at = new Date(trade.purchased_at ?? trade.executed_at);
  const item = document.createElement("li");
  item.dataset.tradeId = String(key);
  item.innerHTML = `<time>${at.toLocaleTimeString()}</time> <strong class="${side === "buy" ? "up" : "down"}">${side}</strong>
    ${trade.quantity} ${trade.symbol} @ ${fmt(trade.price)}${trade.origin && trade.origin !== "manual" ? ` <span class="muted">(${trade.origin})</span>` : ""}${trade.fee !== undefined ? `
    <span class="money">PnL <span class="pnl ${signClass(trade.realized_pnl)}">${fmtFixed(trade.realized_pnl)}</span> · fee <span class="fee">${fmtFixed(trade.fee)}</span></span>` : ""}`;
  if (where === "append") $("#trade-feed").append(item);
  else prependCapped($("#trade-feed"), item, state.tradeRows);
  addMarker(trade.symbol, trade.executed_at ?? trade.purchased_at, trade.price, side, "trade");
}

function showSignal(signal) {
  const item = document.createElement("li");
  item.innerHTML = `<time>${new Date(signal.generated_at ?? Date.now()).toLocaleTimeString()}</time>
    <strong class="${signal.action === "buy" ? "up" : signal.action === "sell" ? "down" : ""}">${signal.action}</strong>
    ${signal.symbol} @ ${fmt(signal.price)} <span class="muted">${signal.strategy ?? ""} · ${signal.reason ?? ""}</span>`;
  prependCapped($("#signal-feed"), item);
  if (signal.action === "buy" || signal.action === "sell") {
    addMarker(signal.symbol, signal.generated_at, signal.price, signal.action, "signal");
  }
}

// ---------- orders ----------

function applyOrder(order, seq) {
  const known = state.orders.get(order.id);
  if (known && known[1] >= seq) return; // the snapshot or a later update already has it
  if (order.status === "new" || order.status === "triggered") state.orders.set(order.id, [order, seq]);
  else state.orders.set(order.id, [null, seq]);
  renderOrders();
}

function applyOpenOrders(snapshot) {
  // Updates with a larger seq (even ones that arrived first) stay; the rest is the snapshot's.
  for (const [id, [, seq]] of state.orders) if (seq <= snapshot.seq) state.orders.delete(id);
  for (const order of snapshot.payload.orders) {
    const known = state.orders.get(order.id);
    if (!known || known[1] <= snapshot.seq) state.orders.set(order.id, [order, snapshot.seq]);
  }
  renderOrders();
}

function renderOrders() {
  const open = [...state.orders.values()].map(([order]) => order).filter(Boolean).sort((a, b) => a.id - b.id);
  $("#open-orders tbody").replaceChildren(...open.map(orderRow));
  $("#no-orders").hidden = open.length > 0;
}

function orderRow(order) {
  const row = document.createElement("tr");
  row.dataset.orderId = String(order.id);
  const price = order.price ?? order.stop_price;
  row.innerHTML = `<th scope="row"><span class="${order.side === "buy" ? "up" : "down"}">${order.side}</span> ${order.symbol}</th>
    <td>${order.type}${order.stop_price && order.price ? ` @${fmt(order.stop_price)}` : ""}</td><td>${order.quantity ?? order.amount}</td>
    <td>${fmt(price)}</td><td>${order.status}</td>
    <td><button type="button" class="small ghost cancel" aria-label="Cancel order ${order.id}">Cancel</button></td>`;
  row.querySelector(".cancel").addEventListener("click", (event) => {
    event.currentTarget.disabled = true;
    request("cancel_order", { order_id: order.id }, (reply) => {
      if (reply.type === "error") {
        event.target.disabled = false;
        toast({ alert_type: "cancel_order", message: `${reply.code}: ${reply.error}`, severity: "warning" });
      } else {
        applyOrder(reply.payload, Number.MAX_SAFE_INTEGER - 1);
      }
    });
  });
  return row;
}

function setupOrderForm() {
  const form = $("#order-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const type = data.get("type");
    const text = (name) => String(data.get(name) ?? "").trim();
    const payload = { symbol: data.get("symbol"), side: data.get("side"), type, quantity: text("quantity"),
      client_order_id: newClientOrderId() };
    // Empty fields are left out, so the server names what is missing (`invalid_order`).
    if ((type === "limit" || type === "stop_limit") && text("price")) payload.price = text("price");
    if ((type === "stop_market" || type === "stop_limit") && text("stop_price")) payload.stop_price = text("stop_price");
    if (type === "limit") payload.time_in_force = data.get("time_in_force");
    const result = $("#order-result");
    result.className = "result";
    result.textContent = "sending…";
    $("#order-submit").disabled = true;
    request("place_order", payload, (reply) => {
      $("#order-submit").disabled = !state.canTrade;
      if (reply.type === "error") {
        result.className = "result error";
        result.textContent = `Rejected (${reply.code ?? "error"}): ${reply.error}`;
        return;
      }
      const order = reply.payload.order;
      result.className = "result ok";
      result.textContent = `Order ${order.id}: ${order.status}`;
    });
  });
}

// ---------- candlestick chart ----------

function chartChannel() {
  return state.chart.symbol ? `candles:${state.chart.symbol}:${state.chart.interval}` : null;
}

async function loadChart() {
  const { symbol, interval } = state.chart;
  if (!symbol) return;
  try {
    const candles = await getJson(`/api/v1/candles/${symbol}?interval=${interval}&limit=${CHART_CANDLES}`);
    if (symbol !== state.chart.symbol || interval !== state.chart.interval) return;
    state.chart.candles = candles;
    drawChart();
  } catch (err) {
    console.warn("could not load candles", err.message);
  }
}

function switchChart(symbol, interval) {
  const before = chartChannel();
  state.chart.symbol = symbol;
  state.chart.interval = interval;
  state.chart.candles = [];
  const after = chartChannel();
  if (before && before !== after) send("unsubscribe", { channels: [before] });
  if (after) send("subscribe", { channels: [after] });
  drawChart();
  loadChart();
}

function showCandle(message) {
  if (message.channel !== chartChannel()) return;
  const candle = message.payload;
  const list = state.chart.candles;
  const last = list[list.length - 1];
  if (last && last.open_time === candle.open_time) list[list.length - 1] = candle;
  else if (!last || new Date(candle.open_time) > new Date(last.open_time)) list.push(candle);
  while (list.length > CHART_CANDLES) list.shift();
  state.chart.updates += 1;
  drawChart();
}

function addMarker(symbol, at, price, side, kind) {
  if (!at || price === undefined) return;
  state.chart.markers.push({ symbol, time: new Date(at).getTime(), price: Number(price), side, kind });
  while (state.chart.markers.length > CHART_MARKERS) state.chart.markers.shift();
  drawChart();
}

function drawChart() {
  const canvas = $("#candle-chart");
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 8;
  ctx.clearRect(0, 0, width, height);
  const candles = state.chart.candles;
  canvas.dataset.candles = String(candles.length);
  canvas.dataset.updates = String(state.chart.updates);
  if (candles.length === 0) {
    canvas.dataset.markers = "0";
    return;
  }
  const step = state.chart.interval === "1m" ? 60e3 : state.chart.interval === "5m" ? 300e3 : state.chart.interval === "1h" ? 3600e3 : 86400e3;
  const first = new Date(candles[0].open_time).getTime();
  const end = new Date(candles[candles.length - 1].open_time).getTime() + step;
  const markers = state.chart.markers.filter((m) => m.symbol === state.chart.symbol && m.time >= first && m.time < end);
  const prices = candles.flatMap((c) => [Number(c.high), Number(c.low)]).concat(markers.map((m) => m.price));
  const min = Math.min(...prices), max = Math.max(...prices);
  const span = max - min || 1;
  const y = (p) => pad + (1 - (p - min) / span) * (height - 2 * pad);
  const slots = Math.max(candles.length, 20);
  const slot = (width - 2 * pad) / slots;
  const x = (time) => pad + ((time - first) / step) * slot;
  for (const c of candles) {
    const left = x(new Date(c.open_time).getTime());
    const up = Number(c.close) >= Number(c.open);
    ctx.strokeStyle = ctx.fillStyle = up ? "#3ddc84" : "#ff6b6b";
    ctx.beginPath();
    ctx.moveTo(left + slot / 2, y(Number(c.high)));
    ctx.lineTo(left + slot / 2, y(Number(c.low)));
    ctx.stroke();
    const top = y(Math.max(Number(c.open), Number(c.close)));
    const bottom = y(Math.min(Number(c.open), Number(c.close)));
    ctx.fillRect(left + slot * 0.15, top, slot * 0.7, Math.max(bottom - top, 1));
  }
  for (const m of markers) {
    const cx = x(m.time), cy = y(m.price);
    ctx.fillStyle = m.kind === "signal" ? "#ffb84d" : m.side === "buy" ? "#5aa9ff" : "#ff6bd5";
    ctx.beginPath();
    const dir = m.side === "buy" ? 1 : -1;
    ctx.moveTo(cx, cy);
    ctx.lineTo(cx - 5, cy + 9 * dir);
    ctx.lineTo(cx + 5, cy + 9 * dir);
    ctx.closePath();
    ctx.fill();
  }
  canvas.dataset.markers = String(markers.length);
}

function toast(alert) {
  const box = document.createElement("div");
  box.className = `toast ${alert.severity ?? "warning"}`;
  box.setAttribute("role", "alert");
  const text = document.createElement("p");
  text.textContent = `${alert.alert_type}: ${alert.message}`;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "small ghost";
  close.textContent = "×";
  close.setAttribute("aria-label", "Dismiss alert");
  close.addEventListener("click", () => box.remove());
  box.append(text, close);
  $("#toasts").append(box);
  setTimeout(() => box.remove(), TOAST_MS);
}

// ---------- trading form ----------

function newClientOrderId() {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  return `web-${random}`.slice(0, 64);
}

function setupTradeForm() {
  const form = $("#trade-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const result = $("#trade-result");
    const payload = {
      symbol: data.get("symbol"),
      side: data.get("side"),
      [data.get("size_kind")]: String(data.get("size")).trim(),
      client_order_id: newClientOrderId(),
    };
    result.className = "result";
    result.textContent = "sending…";
    $("#trade-submit").disabled = true;
    request("manual_trade", payload, (reply) => {
      $("#trade-submit").disabled = !state.canTrade;
      if (reply.type === "error") {
        result.className = "result error";
        result.textContent = `Rejected (${reply.code ?? "error"}): ${reply.error}`;
        return;
      }
      const trade = reply.payload?.trade ?? reply.payload ?? {};
      result.className = "result ok";
      result.textContent = `Executed: ${trade.side ?? payload.side} ${trade.quantity ?? ""} ${payload.symbol} @ ${fmt(trade.price)}`;
    });
  });
}

function setCanTrade(allowed) {
  state.canTrade = allowed;
  for (const button of ["#trade-submit", "#order-submit", "#bot-toggle"]) {
    $(button).disabled = !allowed || (button === "#bot-toggle" && !state.bot);
    $(button).title = allowed ? "" : "This token has no trade scope";
  }
  for (const button of document.querySelectorAll("#positions .exit")) button.disabled = !allowed;
}

// ---------- socket ----------

function send(type, payload, id) {
  const message = { type, payload };
  if (id !== undefined) message.id = id;
  if (state.socket?.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function request(type, payload, onReply) {
  const id = `r${state.nextId++}`;
  state.pending.set(id, onReply);
  if (state.socket?.readyState !== WebSocket.OPEN) {
    state.pending.delete(id);
    onReply({ type: "error", code: "disconnected", error: "not connected; retrying soon" });
    return;
  }
  send(type, payload, id);
}

function handle(message) {
  if (message.type === "welcome" && message.epoch !== undefined && message.epoch !== state.epoch) {
    // Another server run: old seq values mean nothing.
    state.epoch = message.epoch;
    state.lastSeq.clear();
    state.botSeq = -1;
  }
  if (typeof message.channel === "string" && Number.isInteger(message.seq) && message.seq > (state.lastSeq.get(message.channel) ?? 0)) {
    state.lastSeq.set(message.channel, message.seq);
  }
  if (message.type === "subscribed") {
    if (message.epoch !== undefined) state.epoch = message.epoch;
    // Resumed channels got exactly what was missed; anything else is refilled over REST.
    const recovered = message.recovered ? Object.values(message.recovered) : [];
    if (recovered.length === 0 || recovered.includes(false)) refill();
  }
  if (message.id !== undefined && state.pending.has(message.id)) {
    const callback = state.pending.get(message.id);
    state.pending.delete(message.id);
    callback(message);
  }
  switch (message.type) {
    case "ticker_update": showTicker(message.payload); break;
    case "portfolio_update": showPortfolio(message.payload); break;
    case "trade_notification": showTrade(message.payload); refreshPerformanceSoon(); break;
    case "signal": showSignal(message.payload); break;
    case "alert": toast(message.payload); break;
    case "order_update": applyOrder(message.payload.order, message.seq); break;
    case "open_orders": applyOpenOrders(message); break;
    case "candle": showCandle(message); break;
    case "bot_state_update": showBotState(message.payload, message.seq); break;
    case "welcome": case "hello":
      if (Array.isArray(message.scopes ?? message.payload?.scopes)) setCanTrade((message.scopes ?? message.payload.scopes).includes("trade"));
      break;
    case "error": if (message.id === undefined) console.warn("server error frame", message); break;
    default: break;
  }
}

function wsPath() {
  return "/api/v1/ws";
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // welcome=1: the epoch comes first and pushes wait for our subscribe/resume (docs/protocol.md).
  return `${scheme}://${location.host}${wsPath()}?welcome=1`;
}

async function refill() {
  // What the socket may have missed while it was down: recent trades and the current portfolio.
  try {
    const [page, portfolio] = await Promise.all([getTradePage(`/api/v1/trades?limit=${FEED_ROWS}`), getJson("/api/v1/portfolio")]);
    page.trades.slice().reverse().forEach((trade) => showTrade(trade));
    // After a reconnect older pages may already be shown; only a first load decides alone.
    if (!state.olderTrades) setOlderTrades(page.more);
    showPortfolio(portfolio);
    loadChart();
    loadPerformance();
    const open = await getJson("/api/v1/orders?status=open&limit=1000");
    applyOpenOrders({ seq: state.lastSeq.get("orders") ?? 0, payload: { orders: open } });
  } catch (err) {
    console.warn("refill failed", err.message);
  }
}

function connect() {
  if (!refusalText(state.refusal)) setStatus("connecting", "connecting…");
  const protocols = state.token ? ["cryptobot.v1", `bearer.${state.token}`] : undefined;
  const socket = protocols ? new WebSocket(wsUrl(), protocols) : new WebSocket(wsUrl());
  state.socket = socket;
  let opened = false;
  socket.addEventListener("open", () => {
    opened = true;
    state.refusedUpgrades = 0;
    state.refusal = "";
    state.backoffMs = BACKOFF_MIN_MS;
    setStatus("connected", "live");
    const channels = [...[...state.subscribed].map((s) => `ticker:${s}`), "signals", "orders", "bot"];
    if (chartChannel()) channels.push(chartChannel());
    const payload = { channels };
    if (state.epoch !== null && state.lastSeq.size > 0) {
      payload.resume = { epoch: state.epoch, last_seq: Object.fromEntries(state.lastSeq) };
    }
    send("subscribe", payload);
  });
  socket.addEventListener("message", (event) => {
    try { handle(JSON.parse(event.data)); } catch (err) { console.warn("bad frame", err); }
  });
  socket.addEventListener("close", (event) => {
    for (const callback of state.pending.values()) callback({ type: "error", code: "disconnected", error: "connection lost" });
    state.pending.clear();
    markPricesStale(true);
    if (!opened) suspectRefusedUpgrade();
    const delay = state.backoffMs * (0.75 + Math.random() * 0.5);
    state.backoffMs = Math.min(state.backoffMs * 2, BACKOFF_MAX_MS);
    // A known refusal stays on screen while the page retries.
    const refused = refusalText(state.refusal);
    if (refused) setStatus("refused", refused);
    else setStatus("disconnected", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(connect, delay);
  });
}

// A browser cannot see why an upgrade failed. `POST /api/v1/ws` runs the upgrade's checks and
// answers with the refusal the upgrade got (the browser sends this page's Origin with a POST, and
// the token goes in Authorization), so the page can say why instead of guessing. A token problem
// opens the token dialog; anything else is shown in the status line and retried quietly.
async function suspectRefusedUpgrade() {
  let response;
  try {
    response = await fetch(wsPath(), { method: "POST", headers: authHeaders() });
  } catch {
    return; // The server is down: keep retrying quietly.
  }
  if (response.status === 204) return; // Admitted now: a restart or a dropped socket; retry.
  let code = "";
  try { code = (await response.json()).code ?? ""; } catch { /* not our server's answer */ }
  state.refusal = code;
  if (code === "unauthorized") {
    state.refusedUpgrades += 1;
    // Twice in a row: once can be a restart racing the attempt.
    if (state.refusedUpgrades >= 2) askForToken();
  } else if (refusalText(code)) {
    setStatus("refused", refusalText(code));
  }
}

// What the status line says about a refusal the page cannot fix by itself; "" for the others.
function refusalText(code) {
  if (code === "origin_not_allowed") {
    return `origin not allowed: the server does not accept ${location.origin} (ws.allowed_origins, or a proxy that drops the port from Host)`;
  }
  if (code === "forbidden") return "this token may not read (it lacks the read scope)";
  return "";
}

function askForToken() {
  const dialog = $("#token-dialog");
  if (dialog.open) return;
  dialog.showModal();
}

// Loads the symbol list once; retried after a token is entered when the first try was refused.
async function loadSymbols() {
  if (state.symbols.length) return;
  try {
    const tickers = await getJson("/api/v1/tickers");
    state.symbols = tickers.map((t) => t.symbol);
    tickers.forEach(showTicker);
  } catch (err) {
    console.warn("could not load tickers", err.message);
    return;
  }
  state.symbols.forEach((s) => state.subscribed.add(s));
  $("#trade-symbol").replaceChildren(...state.symbols.map((s) => new Option(s, s)));
  $("#order-symbol").replaceChildren(...state.symbols.map((s) => new Option(s, s)));
  $("#chart-symbol").replaceChildren(...state.symbols.map((s) => new Option(s, s)));
  switchChart(state.symbols[0], $("#chart-interval").value);
  if (state.socket?.readyState === WebSocket.OPEN) {
    send("subscribe", { channels: state.symbols.map((s) => `ticker:${s}`) });
  }
}

async function start() {
  $("#token-form").addEventListener("submit", () => {
    state.token = $("#token-input").value.trim();
    sessionStorage.setItem("cryptobot.token", state.token);
    state.socket?.close();
    loadSymbols();
  });
  setupTradeForm();
  setupOrderForm();
  $("#trades-older").addEventListener("click", loadOlderTrades);
  setupBotToggle();
  const rechart = () => switchChart($("#chart-symbol").value, $("#chart-interval").value);
  $("#chart-symbol").addEventListener("change", rechart);
  $("#chart-interval").addEventListener("change", rechart);
  await loadSymbols();
  connect();
}

start();
