// End-to-end tests of the dashboard: the real cryptobot binary on 127.0.0.1, Debian's Chromium
// driven by playwright-core. Screenshots go to artifacts/ (kept by CI).
//
//   CRYPTOBOT_BIN=target/debug/cryptobot node --test dashboard.test.mjs

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CRYPTOBOT_BIN ?? join(here, "../../target/debug/cryptobot");
const ARTIFACTS = join(here, "artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run"];
const WAIT = { timeout: 15000 };

let server, browser, page, port, dbPath;
const consoleErrors = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port: p } = probe.address();
      probe.close(() => resolve(p));
    });
  });
}

function startServer(extraEnv = {}, onPort = port, onDb = dbPath) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, [], {
      env: {
        ...process.env,
        CRYPTOBOT__SERVER__PORT: String(onPort),
        CRYPTOBOT__SERVER__WORKERS: "1",
        CRYPTOBOT__STORAGE__PATH: onDb,
        CRYPTOBOT__MARKET__TICKS_PER_SECOND: "5",
        CRYPTOBOT__TRADING__AUTO_TRADE: "false",
        RUST_LOG: "info",
        ...extraEnv,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let log = "";
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 20000);
    child.stderr.on("data", (chunk) => {
      log += chunk;
      if (log.includes("listening on http://")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log}`));
    });
  });
}

function stopServer(child) {
  return new Promise((resolve) => {
    child.removeAllListeners("exit");
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

async function screenshot(name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  port = await freePort();
  dbPath = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-")), "cryptobot.db");
  server = await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(`http://127.0.0.1:${port}/`);
});

after(async () => {
  await browser?.close();
  if (server) await stopServer(server);
});

test("the page loads, connects and logs no console errors", async () => {
  await page.locator("#status", { hasText: "live" }).waitFor(WAIT);
  await page.locator("#ticker-BTCUSDT").waitFor(WAIT);
  assert.equal(await page.locator("#tickers tbody tr").count(), 5);
  assert.equal(await page.title(), "cryptobot dashboard");
  await screenshot("01-loaded");
  assert.deepEqual(consoleErrors, []);
});

test("prices update live", async () => {
  const price = page.locator("#ticker-BTCUSDT .price");
  const first = await price.textContent();
  await page.waitForFunction(
    (before) => document.querySelector("#ticker-BTCUSDT .price").textContent !== before, first, WAIT);
  const points = await page.locator("#ticker-BTCUSDT .spark polyline").getAttribute("points");
  assert.ok(points.split(" ").length >= 2, "the sparkline has points");
});

test("unsubscribing stops a symbol's updates", async () => {
  const row = page.locator("#ticker-ETHUSDT");
  await row.locator("button.toggle").click();
  assert.equal(await row.locator("button.toggle").getAttribute("aria-pressed"), "false");
  const frozen = await row.locator(".price").textContent();
  // Give the 5/s feed time to have sent several updates; none may arrive for ETHUSDT.
  await page.locator("#ticker-BTCUSDT .price").evaluate((el) => new Promise((resolve) => {
    let changes = 0;
    new MutationObserver(() => { if (++changes >= 5) resolve(); }).observe(el, { childList: true, characterData: true, subtree: true });
  }));
  assert.equal(await row.locator(".price").textContent(), frozen);
  await row.locator("button.toggle").click();
  assert.equal(await row.locator("button.toggle").getAttribute("aria-pressed"), "true");
});

test("a manual buy appears in the trade feed and the portfolio", async () => {
  await page.selectOption("#trade-symbol", "BTCUSDT");
  await page.check("input[name=side][value=buy]");
  await page.check("input[name=size_kind][value=amount]");
  await page.fill("#trade-size", "250");
  await page.click("#trade-submit");
  await page.locator("#trade-result.ok", { hasText: "Executed" }).waitFor(WAIT);
  await page.locator("#trade-feed li", { hasText: "BTCUSDT" }).first().waitFor(WAIT);
  await page.locator("#positions tbody tr[data-symbol=BTCUSDT]").waitFor(WAIT);
  assert.notEqual(await page.locator("#cash").textContent(), "10,000.00");
  await screenshot("02-after-buy");
});

test("an oversized order shows the error and raises an alert toast", async () => {
  await page.fill("#trade-size", "99999999");
  await page.click("#trade-submit");
  const result = page.locator("#trade-result.error");
  await result.waitFor(WAIT);
  assert.match(await result.textContent(), /insufficient_funds/);
  const toast = page.locator(".toast", { hasText: "trade_rejected" }).first();
  await toast.waitFor(WAIT);
  await screenshot("03-rejected-order");
  await toast.getByRole("button", { name: "Dismiss alert" }).click();
  await toast.waitFor({ state: "detached", ...WAIT });
});

test("stop-loss and take-profit can be set on a position", async () => {
  const row = page.locator("#positions tbody tr[data-symbol=BTCUSDT]");
  await row.locator("input[name=stop_loss]").fill("1000");
  await row.locator("input[name=take_profit]").fill("1000000");
  await row.getByRole("button", { name: "Set" }).click();
  await page.locator(".toast", { hasText: "levels saved" }).first().waitFor(WAIT);
  await page.waitForFunction(() => {
    const input = document.querySelector("#positions tr[data-symbol=BTCUSDT] input[name=stop_loss]");
    return input && input.value === "1000";
  }, null, WAIT);
});

test("the order form places a resting limit order, listed with a cancel button that cancels it", async () => {
  await page.selectOption("#order-symbol", "BTCUSDT");
  await page.check("#order-form input[name=side][value=buy]");
  await page.selectOption("#order-type", "limit");
  await page.fill("#order-quantity", "0.001");
  await page.fill("#order-price", "1000");
  await page.click("#order-submit");
  await page.locator("#order-result.ok", { hasText: "new" }).waitFor(WAIT);
  const id = (await page.locator("#order-result").textContent()).match(/Order (\d+)/)[1];
  const row = page.locator(`#open-orders tbody tr[data-order-id="${id}"]`);
  await row.waitFor(WAIT);
  assert.match(await row.textContent(), /limit/);
  assert.equal(await page.locator("#no-orders").isHidden(), true);
  // The server holds it too, with its cost reserved.
  const open = await page.evaluate(async () => (await fetch("/api/v1/orders?status=open")).json());
  assert.deepEqual(open.map((o) => String(o.id)), [id]);
  await screenshot("07-open-order");
  await row.getByRole("button", { name: `Cancel order ${id}` }).click();
  await row.waitFor({ state: "detached", ...WAIT });
  await page.locator("#no-orders").waitFor({ state: "visible", ...WAIT });
  const after = await page.evaluate(async (orderId) =>
    (await fetch("/api/v1/orders?status=canceled")).json().then((orders) => orders.map((o) => String(o.id))), id);
  assert.deepEqual(after, [id]);
});

test("an order the server refuses shows its code", async () => {
  await page.selectOption("#order-type", "limit");
  await page.fill("#order-quantity", "0.001");
  await page.fill("#order-price", "");
  await page.click("#order-submit");
  const result = page.locator("#order-result.error");
  await result.waitFor(WAIT);
  assert.match(await result.textContent(), /invalid_order/);
});

test("a buy and a sell through the page update the performance row, the daily profit and show PnL and fee", async () => {
  const tradesOf = async (symbol) => {
    const cell = page.locator(`#performance tbody tr[data-symbol=${symbol}] .trades`);
    return (await cell.count()) ? Number(await cell.textContent()) : 0;
  };
  await page.locator("#performance-total .trades").filter({ hasNotText: "–" }).waitFor(WAIT);
  const before = await tradesOf("ETHUSDT");
  await page.selectOption("#trade-symbol", "ETHUSDT");
  await page.check("input[name=side][value=buy]");
  await page.check("input[name=size_kind][value=amount]");
  await page.fill("#trade-size", "300");
  await page.click("#trade-submit");
  await page.locator("#trade-result.ok", { hasText: "ETHUSDT" }).waitFor(WAIT);
  const position = page.locator("#positions tbody tr[data-symbol=ETHUSDT]");
  await position.waitFor(WAIT);
  const quantity = (await position.locator("td").first().textContent()).trim();
  await page.check("input[name=side][value=sell]");
  await page.check("input[name=size_kind][value=quantity]");
  await page.fill("#trade-size", quantity);
  await page.click("#trade-submit");
  await page.locator("#trade-result.ok", { hasText: "sell" }).waitFor(WAIT);
  await page.waitForFunction(([want]) => {
    const cell = document.querySelector("#performance tbody tr[data-symbol=ETHUSDT] .trades");
    return cell && Number(cell.textContent) === want;
  }, [before + 2], WAIT);
  // The row shows what the API computed, and the sell's feed line its PnL and fee.
  const api = await page.evaluate(async () => (await fetch("/api/v1/performance")).json());
  const eth = api.symbols.find((s) => s.symbol === "ETHUSDT");
  const money = (v) => Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const row = page.locator("#performance tbody tr[data-symbol=ETHUSDT]");
  assert.equal(await row.locator(".pnl").textContent(), money(eth.realized_pnl));
  assert.equal(await row.locator(".fees").textContent(), money(eth.fees));
  assert.equal(await row.locator(".volume").textContent(), money(eth.volume));
  assert.match(await row.locator(".win-rate").textContent(), /^(0\.00|100\.00) %$/);
  assert.equal(await page.locator("#performance-total .trades").textContent(), String(api.total.trades));
  const today = new Date().toISOString().slice(0, 10);
  await page.waitForFunction(([day, total]) => {
    const cell = document.querySelector(`#daily-profit tr[data-date="${day}"] .trades`);
    return cell && Number(cell.textContent) === total;
  }, [today, api.total.trades], WAIT);
  const sell = page.locator("#trade-feed li", { hasText: "ETHUSDT" }).filter({ hasText: "sell" }).first();
  assert.match(await sell.textContent(), /PnL -?[\d,]+\.\d\d · fee [\d,]+\.\d\d/);
  assert.equal(await page.locator("#no-performance").isHidden(), true);
  await screenshot("03b-performance");
});

test("pausing on one page shows paused on every open page; a force exit sells the position", async () => {
  const other = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  try {
    await other.goto(`http://127.0.0.1:${port}/`);
    await other.locator("#status", { hasText: "live" }).waitFor(WAIT);
    // The tests run with trading.auto_trade = false: both pages start paused.
    await page.locator("#bot[data-state=paused]").waitFor(WAIT);
    await other.locator("#bot[data-state=paused]").waitFor(WAIT);
    assert.equal(await page.locator("#bot-toggle").textContent(), "Resume bot");
    // Resume on one page, the other follows from the pushed event; then pause again.
    await page.click("#bot-toggle");
    await other.locator("#bot[data-state=running]").waitFor(WAIT);
    await page.locator("#bot[data-state=running]").waitFor(WAIT);
    await page.click("#bot-toggle");
    await other.locator("#bot[data-state=paused]").waitFor(WAIT);
    assert.match(await other.locator("#bot-state").textContent(), /^auto-trading: paused \(since .+ by anonymous\)$/);
    assert.equal(await other.locator("#bot-toggle").textContent(), "Resume bot");
    await other.screenshot({ path: join(ARTIFACTS, "03c-paused-elsewhere.png"), fullPage: true });

    // A position to exit.
    await page.selectOption("#trade-symbol", "SOLUSDT");
    await page.check("input[name=side][value=buy]");
    await page.check("input[name=size_kind][value=amount]");
    await page.fill("#trade-size", "200");
    await page.click("#trade-submit");
    await page.locator("#trade-result.ok", { hasText: "SOLUSDT" }).waitFor(WAIT);
    const row = page.locator("#positions tbody tr[data-symbol=SOLUSDT]");
    await row.waitFor(WAIT);
    await other.locator("#positions tbody tr[data-symbol=SOLUSDT]").waitFor(WAIT);
    // The button is in sight, not scrolled out of its card.
    const [buttonRight, cardRight] = await row.locator("button.exit").evaluate((button) =>
      [button.getBoundingClientRect().right, button.closest(".card").getBoundingClientRect().right]);
    assert.ok(buttonRight <= cardRight, `the exit button ends at ${buttonRight}px, its card at ${cardRight}px`);
    // Dismissing the confirmation sells nothing.
    page.once("dialog", (dialog) => dialog.dismiss());
    await row.locator("button.exit").click();
    assert.equal(await row.count(), 1);
    assert.equal(await page.locator("#trade-feed li", { hasText: "force_exit" }).count(), 0);
    // Confirmed: the position goes away on both pages and the sell is in the trade list.
    page.once("dialog", (dialog) => {
      assert.match(dialog.message(), /SOLUSDT/);
      dialog.accept();
    });
    await row.locator("button.exit").click();
    await page.locator("#positions tbody tr[data-symbol=SOLUSDT]").waitFor({ state: "detached", ...WAIT });
    await other.locator("#positions tbody tr[data-symbol=SOLUSDT]").waitFor({ state: "detached", ...WAIT });
    for (const p of [page, other]) {
      const sold = p.locator("#trade-feed li", { hasText: "SOLUSDT" }).filter({ hasText: "(force_exit)" }).first();
      await sold.waitFor(WAIT);
      assert.match(await sold.textContent(), /sell/);
    }
    await screenshot("03d-force-exit");
  } finally {
    await other.close();
  }
  assert.deepEqual(consoleErrors, []);
});

test("the candlestick chart draws candles, updates live and marks the bot's trades", async () => {
  await page.selectOption("#chart-symbol", "BTCUSDT");
  await page.selectOption("#chart-interval", "1h");
  const chart = page.locator("#candle-chart");
  await page.waitForFunction(() => Number(document.querySelector("#candle-chart").dataset.candles) >= 1, null, WAIT);
  // Live: candle frames of the chart's channel keep arriving (about one a second).
  const updates = Number(await chart.getAttribute("data-updates"));
  await page.waitForFunction((before) => Number(document.querySelector("#candle-chart").dataset.updates) > before, updates, WAIT);
  // The manual BTCUSDT buy of an earlier test is within this hour's candle: one marker at least.
  await page.waitForFunction(() => Number(document.querySelector("#candle-chart").dataset.markers) >= 1, null, WAIT);
  // Something was drawn: the canvas is not blank.
  const painted = await chart.evaluate((canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) count++;
    return count;
  });
  assert.ok(painted > 50, `painted pixels: ${painted}`);
  await screenshot("08-chart");
  assert.deepEqual(consoleErrors, []);
});

test("after a server restart the page reconnects by itself, without duplicate rows", async () => {
  const tradesBefore = await page.locator("#trade-feed li").count();
  await stopServer(server);
  server = undefined;
  await page.locator("#status.status-disconnected").waitFor(WAIT);
  // The prices on screen are the last ones before the drop, and marked so.
  await page.locator("#tickers.stale").waitFor(WAIT);
  assert.match(await page.locator("#tickers-title").textContent(), /stale/);
  await screenshot("04-disconnected");
  server = await startServer();
  await page.locator("#status", { hasText: "live" }).waitFor({ timeout: 30000 });
  // Prices flow again on the new connection.
  const first = await page.locator("#ticker-SOLUSDT .price").textContent();
  await page.waitForFunction(
    (before) => document.querySelector("#ticker-SOLUSDT .price").textContent !== before, first, WAIT);
  assert.equal(await page.locator("#tickers.stale").count(), 0, "fresh prices are not marked stale");
  assert.equal(await page.locator("#tickers-title").textContent(), "Market");
  const ids = await page.locator("#trade-feed li").evaluateAll((items) => items.map((li) => li.dataset.tradeId));
  assert.equal(ids.length, tradesBefore, "no trade row lost or duplicated");
  assert.equal(new Set(ids).size, ids.length);
  await screenshot("05-reconnected");
});

test("the layout works at phone width", async () => {
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
  // Every value of the positions table (a position is held by now) fits in its card, none is
  // hidden or cut off, and each says which column it is.
  await page.locator("#positions tbody tr td").first().waitFor(WAIT);
  const cut = await page.evaluate(() => {
    const card = document.querySelector("#positions").closest(".card").getBoundingClientRect();
    return [...document.querySelectorAll("#positions tbody th, #positions tbody td")]
      .filter((cell) => {
        const box = cell.getBoundingClientRect();
        const unlabelled = cell.tagName === "TD" && !getComputedStyle(cell, "::before").content.includes(cell.dataset.label || "\u0000");
        return box.width === 0 || box.right > card.right + 0.5 || getComputedStyle(cell).display === "none" || unlabelled;
      })
      .map((cell) => cell.dataset.label || cell.textContent.trim());
  });
  assert.deepEqual(cut, [], "positions values hidden, cut or unlabelled at 375 px");
  await screenshot("06-phone");
});

test("a server that requires a token gets one from the user, never in the URL", async () => {
  const securePort = await freePort();
  const secureDb = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-auth-")), "cryptobot.db");
  const tokens = JSON.stringify([
    { name: "browser", token: "s3cret-token-0123456789", scopes: ["read", "trade"] },
    { name: "viewer", token: "viewer-token-0123456789", scopes: ["read"] },
  ]);
  const secure = await startServer({ CRYPTOBOT__AUTH__MODE: "token", CRYPTOBOT__AUTH__TOKENS: tokens }, securePort, secureDb);
  const authPage = await browser.newPage();
  const urls = [];
  authPage.on("websocket", (ws) => urls.push(ws.url()));
  try {
    await authPage.goto(`http://127.0.0.1:${securePort}/`);
    await authPage.locator("#token-dialog[open]").waitFor(WAIT);
    await authPage.fill("#token-input", "s3cret-token-0123456789");
    await authPage.getByRole("button", { name: "Connect" }).click();
    await authPage.locator("#status", { hasText: "live" }).waitFor({ timeout: 30000 });
    await authPage.locator("#ticker-BTCUSDT").waitFor(WAIT);
    assert.equal(await authPage.locator("#trade-submit").isDisabled(), false, "a trade token may trade");
    await authPage.screenshot({ path: join(ARTIFACTS, "07-token.png"), fullPage: true });
    assert.ok(urls.length > 0);
    assert.ok(urls.every((url) => !url.includes("s3cret")), `token leaked into a URL: ${urls}`);
  } finally {
    await authPage.close();
    await stopServer(secure);
  }
});

test("with a read-only token the trade form disables itself", async () => {
  const viewPort = await freePort();
  const viewDb = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-viewer-")), "cryptobot.db");
  const tokens = JSON.stringify([{ name: "viewer", token: "viewer-token-0123456789", scopes: ["read"] }]);
  const server = await startServer({ CRYPTOBOT__AUTH__MODE: "token", CRYPTOBOT__AUTH__TOKENS: tokens }, viewPort, viewDb);
  const viewer = await browser.newPage();
  try {
    await viewer.goto(`http://127.0.0.1:${viewPort}/`);
    await viewer.locator("#token-dialog[open]").waitFor(WAIT);
    await viewer.fill("#token-input", "viewer-token-0123456789");
    await viewer.getByRole("button", { name: "Connect" }).click();
    await viewer.locator("#status", { hasText: "live" }).waitFor({ timeout: 30000 });
    await viewer.locator("#ticker-BTCUSDT .price").waitFor(WAIT);
    await viewer.waitForFunction(() => document.querySelector("#trade-submit").disabled, null, WAIT);
    assert.match(await viewer.locator("#trade-submit").getAttribute("title"), /no trade scope/);
    // The bot's state is shown, but only a trade token may pause or resume it.
    await viewer.locator("#bot[data-state=paused]").waitFor(WAIT);
    assert.equal(await viewer.locator("#bot-toggle").isDisabled(), true);
    assert.match(await viewer.locator("#bot-toggle").getAttribute("title"), /no trade scope/);
    await viewer.screenshot({ path: join(ARTIFACTS, "09-read-only.png"), fullPage: true });
  } finally {
    await viewer.close();
    await stopServer(server);
  }
});

test("with auto-trading on, the bot's own trades appear by themselves", async () => {
  const botPort = await freePort();
  const botDb = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-bot-")), "cryptobot.db");
  // Fast ticks, short averages and big moves so the strategy crosses within seconds.
  const bot = await startServer({
    CRYPTOBOT__TRADING__AUTO_TRADE: "true",
    CRYPTOBOT__MARKET__TICKS_PER_SECOND: "50",
    CRYPTOBOT__MARKET__VOLATILITY_BPS: "50",
    CRYPTOBOT__SIGNALS__SHORT_WINDOW: "2",
    CRYPTOBOT__SIGNALS__LONG_WINDOW: "4",
  }, botPort, botDb);
  const botPage = await browser.newPage();
  try {
    await botPage.goto(`http://127.0.0.1:${botPort}/`);
    await botPage.locator("#signal-feed li").first().waitFor(WAIT);
    const autoTrade = botPage.locator("#trade-feed li", { hasText: "(auto)" }).first();
    await autoTrade.waitFor({ timeout: 30000 });
    await botPage.screenshot({ path: join(ARTIFACTS, "08-bot-trading.png"), fullPage: true });
  } finally {
    await botPage.close();
    await stopServer(bot);
  }
});

test("the trade list pages back through older trades, newest first, and live trades go on top", async () => {
  const pagedPort = await freePort();
  const pagedDb = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-paged-")), "cryptobot.db");
  const paged = await startServer({ CRYPTOBOT__SERVER__REST_RATE_PER_IP: "0" }, pagedPort, pagedDb);
  const buy = async () => {
    const response = await fetch(`http://127.0.0.1:${pagedPort}/api/v1/trades`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ symbol: "BTCUSDT", side: "buy", amount: "10" }),
    });
    const body = await response.text();
    assert.equal(response.status, 201, body);
    return JSON.parse(body).trade.id;
  };
  const pagedPage = await browser.newPage();
  const rowIds = () => pagedPage.locator("#trade-feed li").evaluateAll((items) => items.map((li) => Number(li.dataset.tradeId)));
  try {
    // One page (50) and five more: the list shows the newest page and offers the rest.
    const ids = [];
    for (let n = 0; n < 55; n++) ids.push(await buy());
    await pagedPage.goto(`http://127.0.0.1:${pagedPort}/`);
    await pagedPage.locator("#status", { hasText: "live" }).waitFor(WAIT);
    await pagedPage.locator("#trades-older").waitFor({ state: "visible", ...WAIT });
    assert.deepEqual(await rowIds(), ids.slice(5).reverse());
    await pagedPage.click("#trades-older");
    await pagedPage.locator("#trades-older").waitFor({ state: "hidden", ...WAIT });
    assert.deepEqual(await rowIds(), ids.slice().reverse());
    const line = pagedPage.locator(`#trade-feed li[data-trade-id="${ids[0]}"]`);
    assert.match(await line.textContent(), /PnL -?[\d,]+\.\d\d · fee [\d,]+\.\d\d/);
    // A live trade goes on top; the list keeps its length, so the oldest row leaves and the
    // button comes back to fetch it again.
    const live = await buy();
    await pagedPage.locator(`#trade-feed li[data-trade-id="${live}"]`).waitFor(WAIT);
    await pagedPage.locator("#trades-older").waitFor({ state: "visible", ...WAIT });
    assert.deepEqual(await rowIds(), [live, ...ids.slice(1).reverse()]);
    await pagedPage.click("#trades-older");
    await pagedPage.locator("#trades-older").waitFor({ state: "hidden", ...WAIT });
    assert.deepEqual(await rowIds(), [live, ...ids.slice().reverse()]);
    await pagedPage.screenshot({ path: join(ARTIFACTS, "09-trade-pages.png"), fullPage: true });
  } finally {
    await pagedPage.close();
    await stopServer(paged);
  }
});

// A reverse proxy with the mistake of `proxy_set_header Host $host`: it forwards every request
// with the port dropped from Host, so the server's same-origin check refuses the page's upgrade.
function portDroppingProxy(listenPort, targetPort) {
  const proxy = createServer((client) => {
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    client.on("data", (chunk) => {
      upstream.write(Buffer.from(chunk.toString("latin1").replace(/\r\nHost: ([^:\r]+):\d+\r\n/gi, "\r\nHost: $1\r\n"), "latin1"));
    });
    upstream.pipe(client);
    const close = () => { client.destroy(); upstream.destroy(); };
    client.on("error", close); upstream.on("error", close);
    client.on("close", close); upstream.on("close", close);
  });
  return new Promise((resolve) => proxy.listen(listenPort, "127.0.0.1", () => resolve(proxy)));
}

test("behind a proxy that drops the port from Host the page says origin not allowed, not token", async () => {
  const serverPort = await freePort();
  const proxyPort = await freePort();
  const db = join(mkdtempSync(join(tmpdir(), "cryptobot-browser-origin-")), "cryptobot.db");
  const server = await startServer({ CRYPTOBOT__WS__ALLOW_LOCALHOST_ORIGINS: "false" }, serverPort, db);
  const proxy = await portDroppingProxy(proxyPort, serverPort);
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${proxyPort}/`);
    // REST works through the proxy (no origin check there): prices load.
    await page.locator("#ticker-BTCUSDT").waitFor(WAIT);
    await page.locator("#status.status-refused", { hasText: "origin not allowed" }).waitFor({ timeout: 30000 });
    assert.match(await page.locator("#status").textContent(), new RegExp(`127\\.0\\.0\\.1:${proxyPort}`));
    assert.equal(await page.locator("#token-dialog[open]").count(), 0, "no token dialog for an origin refusal");
    await page.screenshot({ path: join(ARTIFACTS, "10-origin-refused.png"), fullPage: true });
  } finally {
    await page.close();
    proxy.close();
    await stopServer(server);
  }
});
