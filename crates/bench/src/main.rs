//! `cryptobot-load`: a load generator for the cryptobot WebSocket gateway, on loopback only.
//!
//! Opens N connections (ramped, with a bounded number of handshakes in flight, spread over
//! 127.0.0.x source addresses), subscribes connection `i` to `ticker:<symbol i mod K>` plus any
//! extra channels, counts frames for a fixed window and records delivery latency (arrival time
//! minus the frame's `ts_us`) in an HDR histogram. Prints one JSON line and exits by itself.
//!
//! Optionally also: `--stall` connections that never read, `--slow-readers` that read at most
//! `--slow-rate` frames a second (their ticker age at arrival and the trades they got are reported
//! apart), and `--trades` posted to the REST API during the window so that the slow readers can
//! check that every trade reached them.
//!
//! Cheap on purpose, since it shares the machine with the server: one thread, frames are scanned
//! for `ts_us` and `seq` without a JSON parse, and tungstenite reads many frames per syscall.
//! May depend on: tokio, tokio-tungstenite, hdrhistogram, serde_json. Not on any cryptobot crate:
//! it speaks only the wire protocol (docs/protocol.md), like any client.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod options;
mod procfs;
mod scan;
mod slow;
mod trader;

use options::Options;
use slow::{SlowReader, SlowStats};
use trader::Trades;

/// What every connection task adds to; one thread, so `Cell`s.
#[derive(Debug)]
struct Stats {
    /// Latency in microseconds of every ticker frame received in the window.
    latency_us: RefCell<Histogram<u64>>,
    /// Frames of any kind received in the window.
    messages: Cell<u64>,
    /// Ticker updates skipped between two received ones (conflated by the server) in the window.
    skipped: Cell<u64>,
    /// Whether the measuring window is open.
    measuring: Cell<bool>,
    /// Connections upgraded and subscribed.
    subscribed: Cell<usize>,
    /// Connections that failed to upgrade or subscribe.
    failed: Cell<usize>,
    /// Connections that ended during the window (closed by the server, say).
    dropped: Cell<usize>,
    /// The first error message, to say why connections failed.
    first_error: RefCell<Option<String>>,
}

impl Stats {
    fn new() -> Self {
        Self {
            // expect: 1 µs to 60 s with 3 significant digits are valid bounds.
            latency_us: RefCell::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
            messages: Cell::new(0),
            skipped: Cell::new(0),
            measuring: Cell::new(false),
            subscribed: Cell::new(0),
            failed: Cell::new(0),
            dropped: Cell::new(0),
            first_error: RefCell::new(None),
        }
    }

    fn fail(&self, error: String) {
        self.failed.set(self.failed.get() + 1);
        self.first_error.borrow_mut().get_or_insert(error);
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("cryptobot-load: {message}\n\n{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cryptobot-load: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    let options = Rc::new(options);
    let report = local.block_on(&runtime, run(Rc::clone(&options)));
    println!("{report}");
    let messages = report["messages"].as_u64().unwrap_or(0);
    let failed = report["connections_failed"].as_u64().unwrap_or(0);
    if options.min_messages > 0 && (messages < options.min_messages || failed > 0) {
        eprintln!(
            "cryptobot-load: expected at least {} messages and no failed connections, got {messages} and {failed} failed",
            options.min_messages
        );
        return ExitCode::from(1);
    }
    // Skips closing thousands of sockets one by one; the OS does it.
    ExitCode::SUCCESS
}

async fn run(options: Rc<Options>) -> serde_json::Value {
    let stats = Rc::new(Stats::new());
    let slow_stats = Rc::new(SlowStats::new(options.slow_readers));
    let trades = Rc::new(Trades::default());
    let server = options.server_pid.map(procfs::Process::new);
    let rss_before_kib = server.as_ref().and_then(procfs::Process::rss_kib);
    let in_flight = Rc::new(Semaphore::new(options.connect_concurrency));
    let started = Instant::now();
    let deadline = started + options.connect_timeout;
    let total = options.connections + options.stall + options.slow_readers;
    for index in 0..total {
        let role = if index < options.connections {
            Role::Reader
        } else if index < options.connections + options.stall {
            Role::Stalled
        } else {
            Role::Slow(index - options.connections - options.stall)
        };
        let task = Connection {
            index,
            options: Rc::clone(&options),
            stats: Rc::clone(&stats),
            slow: Rc::clone(&slow_stats),
            in_flight: Rc::clone(&in_flight),
            role,
        };
        tokio::task::spawn_local(task.run());
    }
    // The storm: until every connection is subscribed or failed, or the connect deadline.
    while stats.subscribed.get() + stats.failed.get() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_connected_kib = server.as_ref().and_then(procfs::Process::rss_kib);
    tokio::time::sleep(options.warmup).await;

    let server_cpu_start = server.as_ref().and_then(procfs::Process::cpu_us);
    let own_cpu_start = procfs::Process::current().cpu_us();
    let window_start = Instant::now();
    slow_stats.window_start_us.set(now_us());
    stats.measuring.set(true);
    if options.trades > 0 {
        let plan = trader::Plan {
            target: options.target,
            symbol: options.trade_symbol.clone(),
            amount: options.trade_amount.clone(),
            count: options.trades,
            per_sec: options.trade_rate,
            id_prefix: format!("load-{}-{}", std::process::id(), now_us() / 1_000_000),
        };
        let (trades, stats) = (Rc::clone(&trades), Rc::clone(&stats));
        tokio::task::spawn_local(async move {
            trader::run(plan, &trades, || stats.measuring.get()).await;
        });
    }
    let window_end = window_start + options.duration;
    loop {
        let now = Instant::now();
        if now >= window_end {
            break;
        }
        tokio::time::sleep((window_end - now).min(QUEUE_SAMPLE_PERIOD)).await;
        if options.slow_readers > 0 {
            sample_slow_queues(&slow_stats, options.target.port());
        }
    }
    stats.measuring.set(false);
    let window = window_start.elapsed().as_secs_f64();
    let server_cpu_us = server
        .as_ref()
        .and_then(procfs::Process::cpu_us)
        .zip(server_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    let own_cpu_us = procfs::Process::current()
        .cpu_us()
        .zip(own_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    let rss_after_kib = server.as_ref().and_then(procfs::Process::rss_kib);
    let drain_secs = drain(&options, &slow_stats, &trades).await;

    let messages = stats.messages.get();
    let histogram = stats.latency_us.borrow();
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let subscribed = stats.subscribed.get();
    #[allow(clippy::cast_precision_loss, reason = "reporting ratios")]
    let per_connection_kib = rss_before_kib
        .zip(rss_connected_kib)
        .filter(|_| subscribed > 0)
        .map(|(before, after)| after.saturating_sub(before) as f64 / subscribed as f64);
    #[allow(clippy::cast_precision_loss, reason = "reporting ratios")]
    let cpu_us_per_message = server_cpu_us
        .filter(|_| messages > 0)
        .map(|cpu| cpu as f64 / messages as f64);
    #[allow(clippy::cast_precision_loss, reason = "reporting ratios")]
    let rate = messages as f64 / window;
    json!({
        "label": options.label,
        "connections": options.connections,
        "stalled_connections": options.stall,
        "connections_ok": subscribed,
        "connections_failed": stats.failed.get(),
        "connections_dropped_in_window": stats.dropped.get(),
        "first_error": *stats.first_error.borrow(),
        "connect_secs": round(connect_secs, 3),
        "window_secs": round(window, 3),
        "messages": messages,
        "messages_per_sec": round(rate, 0),
        "ticker_updates_skipped": stats.skipped.get(),
        "latency_ms": {
            "p50": ms(0.5),
            "p99": ms(0.99),
            "p999": ms(0.999),
            "max": histogram.max() as f64 / 1000.0,
            "samples": histogram.len(),
        },
        "server": {
            "pid": options.server_pid,
            "cpu_ms": server_cpu_us.map(|us| us / 1000),
            "cpu_us_per_message": cpu_us_per_message.map(|v| round(v, 3)),
            "rss_kib_before_connect": rss_before_kib,
            "rss_kib_connected": rss_connected_kib,
            "rss_kib_after": rss_after_kib,
            "rss_kib_per_connection": per_connection_kib.map(|v| round(v, 2)),
        },
        "offered_per_sec": options.offered_per_sec,
        "slow_readers": slow_report(&options, &slow_stats, &trades, window, drain_secs),
        "trades": trades_report(&options, &trades),
        "load_generator_cpu_ms": own_cpu_us.map(|us| us / 1000),
        "load_generator_rss_kib": procfs::Process::current().rss_kib(),
        "loadavg": std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next().map(str::to_owned)),
    })
}

/// How often the slow readers' kernel queues are sampled in the window.
const QUEUE_SAMPLE_PERIOD: Duration = Duration::from_millis(500);

/// Sums the bytes unread in the slow readers' receive queues and unsent or unacknowledged in the
/// server's send queues towards them (both ends are on this machine).
fn sample_slow_queues(slow: &SlowStats, server_port: u16) {
    let ports = slow.local_ports.borrow();
    if ports.is_empty() {
        return;
    }
    let Some(table) = procfs::tcp_table() else {
        return;
    };
    let (mut client_rx, mut server_tx) = (0, 0);
    for &port in ports.iter() {
        client_rx += procfs::tcp_queues_in(&table, port, server_port).map_or(0, |(_, rx)| rx);
        server_tx += procfs::tcp_queues_in(&table, server_port, port).map_or(0, |(tx, _)| tx);
    }
    slow.sample_queues(client_rx, server_tx);
}

/// After the window: waits, at most `--drain` seconds, until the trader is done and every slow
/// reader got every executed trade (or every slow reader's connection ended). Returns how long
/// it waited, or `None` when there is nothing to wait for.
async fn drain(options: &Options, slow: &SlowStats, trades: &Trades) -> Option<f64> {
    if options.trades == 0 || options.slow_readers == 0 {
        return None;
    }
    let started = Instant::now();
    let deadline = started + options.drain;
    while Instant::now() < deadline {
        let all_ended = slow.ended.get() >= options.slow_readers;
        if all_ended || (trades.done.get() && slow.missing(&trades.executed.borrow()) == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(round(started.elapsed().as_secs_f64(), 3))
}

#[allow(clippy::cast_precision_loss, reason = "reporting ratios")]
fn slow_report(
    options: &Options,
    slow: &SlowStats,
    trades: &Trades,
    window: f64,
    drain_secs: Option<f64>,
) -> serde_json::Value {
    if options.slow_readers == 0 {
        return serde_json::Value::Null;
    }
    let ages = slow.age_us.borrow();
    let ms = |quantile: f64| ages.value_at_quantile(quantile) as f64 / 1000.0;
    let checks_trades = options.trades > 0 && options.channels.iter().any(|c| c == "trades");
    let received = slow.received.borrow();
    json!({
        "count": options.slow_readers,
        "connected": slow.local_ports.borrow().len(),
        "rate_limit_per_sec": options.slow_rate,
        "rcvbuf": options.slow_rcvbuf,
        "frames_in_window": slow.frames_in_window.get(),
        "frames_per_sec_each": round(
            slow.frames_in_window.get() as f64 / window / options.slow_readers as f64,
            1,
        ),
        "frames_total": slow.frames_total.get(),
        "tickers_in_window": slow.tickers_in_window.get(),
        "tickers_skipped": slow.tickers_skipped.get(),
        "ticker_age_ms": {
            "p50": ms(0.5),
            "p99": ms(0.99),
            "max": ages.max() as f64 / 1000.0,
            "samples": ages.len(),
        },
        "ticker_age_max_ms_by_second": slow
            .age_max_by_second
            .borrow()
            .iter()
            .map(|us| round(*us as f64 / 1000.0, 1))
            .collect::<Vec<_>>(),
        "trade_notifications": slow.trade_notifications.get(),
        "trade_notifications_min_per_reader": received.iter().map(Vec::len).min(),
        "trades_missing": checks_trades.then(|| slow.missing(&trades.executed.borrow())),
        "trade_seq_gaps": slow.trade_seq_gaps.get(),
        "drain_secs": drain_secs,
        "ended": slow.ended.get(),
        "first_close": *slow.first_close.borrow(),
        "kernel_queue_bytes": {
            "client_rx_max": slow.client_rx_max.get(),
            "client_rx_last": slow.client_rx_last.get(),
            "server_tx_max": slow.server_tx_max.get(),
            "server_tx_last": slow.server_tx_last.get(),
        },
    })
}

fn trades_report(options: &Options, trades: &Trades) -> serde_json::Value {
    if options.trades == 0 {
        return serde_json::Value::Null;
    }
    json!({
        "requested": options.trades,
        "per_sec": options.trade_rate,
        "symbol": options.trade_symbol,
        "amount": options.trade_amount,
        "executed": trades.executed.borrow().len(),
        "failed": trades.failed.get(),
        "first_error": *trades.first_error.borrow(),
    })
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// What a connection does once subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Reads every frame as fast as it can.
    Reader,
    /// Never reads (`--stall`).
    Stalled,
    /// Reads at most `--slow-rate` frames a second (`--slow-readers`); the slow reader's number.
    Slow(usize),
}

/// One client: connect, subscribe, then read (or, for a stalled client, never read).
struct Connection {
    index: usize,
    /// Shared by every connection (one copy, not one per connection).
    options: Rc<Options>,
    stats: Rc<Stats>,
    slow: Rc<SlowStats>,
    in_flight: Rc<Semaphore>,
    role: Role,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The WebSocket read buffer of each connection.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// A slow reader's: less than one ticker frame, so that a frame waits in the kernel (where the
/// server's backpressure sees it), not in this process, and its age is measured when it is read.
const SLOW_READ_BUFFER_BYTES: usize = 256;

impl Connection {
    async fn run(self) {
        let connected = {
            // expect: the semaphore is never closed.
            let _permit = self.in_flight.acquire().await.expect("semaphore open");
            tokio::time::timeout(self.options.connect_timeout, self.connect()).await
        };
        let mut socket = match connected {
            Ok(Ok(socket)) => socket,
            Ok(Err(err)) => return self.stats.fail(err),
            Err(_) => return self.stats.fail("connect timeout".to_owned()),
        };
        self.stats.subscribed.set(self.stats.subscribed.get() + 1);
        match self.role {
            Role::Reader => {}
            Role::Stalled => {
                // Holds the socket open and never reads: the server's send buffer fills up.
                std::future::pending::<()>().await;
            }
            Role::Slow(slot) => return self.read_slowly(socket, slot).await,
        }
        let mut last_seq: Option<u64> = None;
        while let Some(frame) = socket.next().await {
            let Ok(Message::Text(text)) = frame else {
                if frame.is_err() {
                    break;
                }
                continue;
            };
            if !self.stats.measuring.get() {
                last_seq = None;
                continue;
            }
            let arrived = now_us();
            let bytes = text.as_bytes();
            self.stats.messages.set(self.stats.messages.get() + 1);
            if !scan::contains(bytes, b"\"ticker_update\"") {
                continue;
            }
            if let Some(ts_us) = scan::number_after(bytes, b"\"ts_us\":") {
                let _ = self
                    .stats
                    .latency_us
                    .borrow_mut()
                    .record(arrived.saturating_sub(ts_us).max(1));
            }
            if let Some(seq) = scan::number_after(bytes, b"\"seq\":") {
                if let Some(last) = last_seq {
                    let skipped = seq.saturating_sub(last).saturating_sub(1);
                    self.stats.skipped.set(self.stats.skipped.get() + skipped);
                }
                last_seq = Some(seq);
            }
        }
        if self.stats.measuring.get() {
            self.stats.dropped.set(self.stats.dropped.get() + 1);
        }
    }

    /// A slow reader's loop: one frame, then a pause, so that at most `--slow-rate` frames a
    /// second are read; the rest waits in the kernel and in the server.
    async fn read_slowly(self, mut socket: Socket, slot: usize) {
        let mut reader = SlowReader::new(slot);
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / self.options.slow_rate));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            pace.tick().await;
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let measuring = self.stats.measuring.get();
                    reader.on_frame(text.as_bytes(), now_us(), measuring, &self.slow);
                }
                Some(Ok(Message::Close(frame))) => {
                    self.slow
                        .first_close
                        .borrow_mut()
                        .get_or_insert_with(|| format!("{frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    self.slow
                        .first_close
                        .borrow_mut()
                        .get_or_insert_with(|| err.to_string());
                    break;
                }
                None => break,
            }
        }
        self.slow.ended.set(self.slow.ended.get() + 1);
    }

    async fn connect(&self) -> Result<Socket, String> {
        let target = self.options.target;
        let source = self.options.source_address(self.index);
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        let receive_buffer = match self.role {
            // A small receive window makes a client that never reads block the server's sends
            // within a second instead of after megabytes of buffering.
            Role::Stalled => Some(4096),
            Role::Slow(_) => self.options.slow_rcvbuf,
            Role::Reader => None,
        };
        if let Some(bytes) = receive_buffer {
            let bytes = u32::try_from(bytes).map_err(|_| format!("SO_RCVBUF {bytes}"))?;
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| format!("SO_RCVBUF: {e}"))?;
        }
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket
            .connect(target)
            .await
            .map_err(|e| format!("connect {target} from {source}: {e}"))?;
        let _ = stream.set_nodelay(true);
        if let (Role::Slow(_), Ok(local)) = (self.role, stream.local_addr()) {
            self.slow.local_ports.borrow_mut().push(local.port());
        }
        // 16 KiB per read still takes dozens of frames per syscall; the default 128 KiB per
        // connection made 19,000 connections cost the load generator gigabytes.
        let read_buffer = match self.role {
            Role::Slow(_) => SLOW_READ_BUFFER_BYTES,
            Role::Reader | Role::Stalled => READ_BUFFER_BYTES,
        };
        let config = WebSocketConfig::default().read_buffer_size(read_buffer);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            self.options.url.as_str(),
            stream,
            Some(config),
        )
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
        let mut channels = match self.role {
            // A slow reader watches every symbol, so its feed is their sum.
            Role::Slow(_) => self
                .options
                .symbols
                .iter()
                .map(|symbol| format!("ticker:{symbol}"))
                .collect(),
            Role::Reader | Role::Stalled => vec![format!(
                "ticker:{}",
                self.options.symbols[self.index % self.options.symbols.len()]
            )],
        };
        channels.extend(self.options.channels.iter().cloned());
        let subscribe = json!({"type": "subscribe", "payload": {"channels": channels}, "id": 1});
        ws.send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        while let Some(frame) = ws.next().await {
            match frame.map_err(|e| format!("subscribe reply: {e}"))? {
                Message::Text(text) if scan::contains(text.as_bytes(), b"\"subscribed\"") => {
                    return Ok(ws);
                }
                Message::Text(text) if scan::contains(text.as_bytes(), b"\"error\"") => {
                    return Err(format!("subscribe refused: {text}"));
                }
                Message::Close(frame) => {
                    return Err(format!("closed while subscribing: {frame:?}"));
                }
                _ => {}
            }
        }
        Err("connection ended while subscribing".to_owned())
    }
}

/// Loopback source addresses 127.0.0.1 to 127.0.0.`count`.
fn loopback_source(index: usize, count: usize) -> Ipv4Addr {
    let host = u8::try_from(1 + index % count.clamp(1, 254)).unwrap_or(1);
    Ipv4Addr::new(127, 0, 0, host)
}
