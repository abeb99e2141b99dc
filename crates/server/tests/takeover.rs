//! Engine takeovers that continue the epoch, with real processes and a real Redis: kill -9 of
//! the active engine five times while trades flow through two gateway nodes and clients stay
//! connected to both, and a successor whose storage is behind Redis (a new epoch).
//!
//! Needs `REDIS_URL`; without it each test says "skipped" on stderr and returns, and under
//! `CI=true` it fails instead. Every test uses its own key prefix and deletes its keys.

#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
mod http;
/// The skip rule of every PostgreSQL-backed test, with a schema of its own per test.
#[path = "../../services/src/trading/storage/needs_postgres.rs"]
mod needs_postgres;
#[path = "../../services/src/scale/needs_redis.rs"]
mod needs_redis;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared by the process tests, each uses part of it"
)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use needs_redis::redis_url_or_skip as redis_url;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{Keys, Socket, next_of_type, say, send, unique};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
/// Longest wait for anything expected (a hang guard, not a performance assertion).
const GUARD: Duration = Duration::from_secs(30);
/// The lease time-to-live of these tests (the default is 10 s), so that a successor starts soon.
const SHORT_LEASE: (&str, &str) = ("CRYPTOBOT__BUS__LEASE_TTL_MS", "2000");
const INITIAL_CASH: &str = "10000";

/// A storage file in a directory of its own.
fn storage_file(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db.sqlite").to_string_lossy().into_owned();
    (dir, path)
}

/// One `cryptobot` process, killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts a node and takes its address from the log line with `marker` (a standby engine
    /// says where it answers before it listens as an engine).
    fn start(role: &str, url: &str, prefix: &str, extra: &[(&str, &str)], marker: &str) -> Self {
        let mut child = Command::new(BIN)
            .env("CRYPTOBOT__SERVER__PORT", "0")
            .env("CRYPTOBOT__SERVER__WORKERS", "1")
            .env("CRYPTOBOT__SERVER__ROLE", role)
            .env("CRYPTOBOT__BUS__BACKEND", "redis")
            .env("CRYPTOBOT__BUS__REDIS_URL", url)
            .env("CRYPTOBOT__BUS__REDIS_PREFIX", prefix)
            .env("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "10")
            .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
            .env("CRYPTOBOT__TRADING__INITIAL_CASH", INITIAL_CASH)
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        let marker = marker.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split(marker.as_str()).nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches(':');
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(GUARD)
            .expect("node reports its address")
            .parse()
            .expect("a socket address");
        Self { child, addr, log }
    }

    /// Waits until the process logged `text`; whether it did within the guard.
    fn wait_logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + GUARD;
        while Instant::now() < deadline {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(text))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Connects and reads the welcome; its epoch.
    async fn connect_held(&self) -> (Socket, u64) {
        let url = format!("ws://{}/api/v1/ws?welcome=1", self.addr);
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let welcome = next_of_type(&mut socket, "welcome").await;
        (socket, welcome["epoch"].as_u64().unwrap())
    }

    /// Connects and subscribes to `trades`.
    async fn connect(&self) -> (Socket, u64) {
        let (mut socket, epoch) = self.connect_held().await;
        send(
            &mut socket,
            &json!({"type": "subscribe", "id": 0, "payload": {"channels": ["trades"]}}),
        )
        .await;
        next_of_type(&mut socket, "subscribed").await;
        (socket, epoch)
    }

    /// Waits until this node serves `epoch` (a gateway has caught up with Redis).
    async fn synced(&self, epoch: u64) {
        let deadline = Instant::now() + GUARD;
        while self.connect_held().await.1 != epoch {
            assert!(Instant::now() < deadline, "never followed epoch {epoch}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = http::request(self.addr, "GET", path, None, b"").await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        response.json()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The trade of key `id` (`buy` 20 USDT, or `sell` 10) through `node`, retried with the same
/// key while it answers 503 (no engine holds the lease yet): the trade's id, whether the answer
/// was a replay, and when it was acknowledged.
async fn trade_retried(node: SocketAddr, id: &str, side: &str) -> (u64, bool, Instant) {
    let amount = if side == "buy" { "20" } else { "10" };
    let body = json!({"symbol": "BTCUSDT", "side": side, "amount": amount, "client_order_id": id});
    let deadline = Instant::now() + GUARD;
    loop {
        let response = http::request(
            node,
            "POST",
            "/api/v1/trades",
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await;
        if matches!(response.status, 200 | 201) {
            let json = response.json();
            return (
                json["trade"]["id"].as_u64().unwrap(),
                json["replayed"] == true,
                Instant::now(),
            );
        }
        assert_eq!(response.status, 503, "{id}: {}", response.body);
        assert!(Instant::now() < deadline, "trade {id} never executed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one client saw until it was stopped: the trades `(seq, id)` in arrival order, and the
/// close frame if the server closed it.
#[derive(Debug, Default)]
struct Seen {
    trades: Vec<(u64, u64)>,
    closed: Option<(u16, String)>,
}

/// Reads `socket` in the background until `want` trades arrived or the server closed it.
fn watch(mut socket: Socket, want: Arc<Mutex<usize>>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            if seen.trades.len() >= *want.lock().unwrap() {
                return seen;
            }
            let frame = tokio::time::timeout_at(deadline, socket.next()).await;
            let Ok(Some(frame)) = frame else {
                return seen;
            };
            match frame {
                Ok(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                    if frame["type"] == "trade_notification" {
                        seen.trades.push((
                            frame["seq"].as_u64().unwrap(),
                            frame["payload"]["id"].as_u64().unwrap(),
                        ));
                    }
                }
                Ok(Message::Close(close)) => {
                    seen.closed = Some(close.map_or((0, String::new()), |close| {
                        (u16::from(close.code), close.reason.to_string())
                    }));
                    return seen;
                }
                Ok(_) => {}
                Err(err) => {
                    seen.closed = Some((0, err.to_string()));
                    return seen;
                }
            }
        }
    })
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_of_the_active_engine_keep_the_epoch_and_every_trade_exactly_once() {
    let Some(url) =
        redis_url("five_kills_of_the_active_engine_keep_the_epoch_and_every_trade_exactly_once")
    else {
        return;
    };
    let (_dir, storage) = storage_file("takeover");
    five_kills(&url, &[("CRYPTOBOT__STORAGE__PATH", storage.as_str())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_on_postgres_keep_the_epoch_and_every_trade_exactly_once() {
    let Some(url) = redis_url("five_kills_on_postgres_keep_the_epoch_and_every_trade_exactly_once")
    else {
        return;
    };
    let Some(schema) = needs_postgres::TestSchema::create(
        "five_kills_on_postgres_keep_the_epoch_and_every_trade_exactly_once",
    ) else {
        return;
    };
    let storage = schema.url();
    five_kills(
        &url,
        &[
            ("CRYPTOBOT__STORAGE__BACKEND", "postgres"),
            ("CRYPTOBOT__STORAGE__URL", storage.as_str()),
        ],
    )
    .await;
}

/// An active engine and a standby on one storage (`storage`: its settings), two gateways, a
/// stream of trades through both, and kill -9 of the active engine five times, a new standby
/// started after each takeover.
async fn five_kills(url: &str, storage: &[(&str, &str)]) {
    const KILLS: usize = 5;
    const TRADES: usize = 70;
    let url = url.to_owned();
    let prefix = unique("takeover");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let mut env = vec![SHORT_LEASE];
    env.extend_from_slice(storage);
    let mut standby_env = env.clone();
    standby_env.push(("CRYPTOBOT__BUS__STANDBY", "true"));
    let mut active = Node::start("engine", &url, &prefix, &env, "listening on http://");
    let a = Node::start(
        "gateway",
        &url,
        &prefix,
        &[SHORT_LEASE],
        "listening on http://",
    );
    let b = Node::start(
        "gateway",
        &url,
        &prefix,
        &[SHORT_LEASE],
        "listening on http://",
    );
    let (_, epoch) = active.connect().await;
    a.synced(epoch).await;
    b.synced(epoch).await;
    let mut standby = Node::start("engine", &url, &prefix, &standby_env, "standby on http://");

    // Clients on both gateways, connected all along.
    let want = Arc::new(Mutex::new(usize::MAX));
    let mut watchers = Vec::new();
    for node in [&a, &b, &a, &b] {
        let (socket, seen) = node.connect().await;
        assert_eq!(seen, epoch);
        watchers.push(watch(socket, Arc::clone(&want)));
    }

    // A stream of trades through both gateways, each under its own key; a third of them sells.
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (addr_a, addr_b, keys, log) = (a.addr, b.addr, prefix.clone(), Arc::clone(&acked));
    let trading = tokio::spawn(async move {
        for n in 0..TRADES {
            let node = if n % 2 == 0 { addr_a } else { addr_b };
            let side = if n % 3 == 2 { "sell" } else { "buy" };
            // A replay is fine: the engine that was killed committed it without answering.
            let (id, _, at) = trade_retried(node, &format!("{keys}-{n}"), side).await;
            log.lock().unwrap().push((id, at));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // Five times: kill -9 of the active engine once some trades went through it; the standby
    // takes over; a new standby starts once it did, so one always waits.
    let mut takeovers = Vec::new();
    for kill in 0..KILLS {
        let before = (kill + 1) * TRADES / (KILLS + 2);
        let deadline = Instant::now() + 2 * GUARD;
        while acked.lock().unwrap().len() < before {
            assert!(Instant::now() < deadline, "the trades stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        active.kill();
        let killed = Instant::now();
        let acked_at_kill = acked.lock().unwrap().len();
        assert!(
            standby.wait_logged("took the engine lease"),
            "no takeover: {:?}",
            standby.log.lock().unwrap()
        );
        assert!(
            standby.wait_logged("continuing the epoch in Redis"),
            "takeover {kill} did not continue the epoch: {:?}",
            standby.log.lock().unwrap()
        );
        let deadline = Instant::now() + GUARD;
        let first = loop {
            if let Some((_, at)) = acked
                .lock()
                .unwrap()
                .iter()
                .skip(acked_at_kill)
                .find(|(_, at)| *at > killed)
            {
                break *at;
            }
            assert!(Instant::now() < deadline, "no trade after takeover {kill}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        takeovers.push(first.duration_since(killed));
        active = standby;
        standby = Node::start("engine", &url, &prefix, &standby_env, "standby on http://");
    }
    tokio::time::timeout(4 * GUARD, trading)
        .await
        .expect("the trades end")
        .expect("every trade executed");
    let acked: Vec<u64> = acked.lock().unwrap().iter().map(|(id, _)| *id).collect();
    say(format_args!(
        "takeovers on {} (kill -9 to the first acknowledged trade through a gateway, lease {} ms): {}",
        if storage.iter().any(|(_, value)| *value == "postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        SHORT_LEASE.1,
        takeovers
            .iter()
            .map(|gap| format!("{} ms", gap.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // TC0: every acknowledged trade is stored exactly once, and nothing else is.
    let listed = a.get("/api/v1/trades?limit=1000").await;
    let listed = listed.as_array().expect("a list of trades");
    let mut stored: Vec<u64> = listed.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    stored.sort_unstable();
    let mut expected = acked.clone();
    expected.sort_unstable();
    assert_eq!(stored, expected, "acknowledged {acked:?}");
    assert_eq!(acked, expected, "acknowledged in id order");
    let mut distinct = expected.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), TRADES, "one trade per key");

    // TC1: a retry of an acknowledged key is a replay of the same trade, on either gateway.
    for n in [0, TRADES / 2, TRADES - 1] {
        let node = if n % 2 == 0 { b.addr } else { a.addr };
        let side = if n % 3 == 2 { "sell" } else { "buy" };
        let (id, replayed, _) = trade_retried(node, &format!("{prefix}-{n}"), side).await;
        assert_eq!((id, replayed), (acked[n], true));
    }

    // TC2: the books balance: positions = bought - sold, cash = initial - buys' cost (fees
    // included) + sells' proceeds (fees deducted).
    let mut quantity = Decimal::ZERO;
    let mut cash: Decimal = INITIAL_CASH.parse().unwrap();
    for trade in listed {
        let (notional, fee) = (dec(&trade["notional"]), dec(&trade["fee"]));
        if trade["side"] == "buy" {
            quantity += dec(&trade["quantity"]);
            cash -= notional + fee;
        } else {
            quantity -= dec(&trade["quantity"]);
            cash += notional - fee;
        }
    }
    let portfolio = b.get("/api/v1/portfolio").await;
    assert_eq!(dec(&portfolio["cash"]), cash, "{portfolio}");
    let positions: BTreeMap<String, Decimal> = portfolio["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            (
                p["symbol"].as_str().unwrap().to_owned(),
                dec(&p["quantity"]),
            )
        })
        .collect();
    assert_eq!(positions.get("BTCUSDT"), Some(&quantity), "{portfolio}");

    // TC3: every client, on both gateways all along, saw the trades channel continue across
    // the five takeovers: no close, seq without gap or duplicate, the acknowledged ids in order.
    *want.lock().unwrap() = TRADES;
    for watcher in watchers {
        let seen = tokio::time::timeout(2 * GUARD, watcher)
            .await
            .expect("the client got every trade")
            .unwrap();
        assert_eq!(seen.closed, None, "{seen:?}");
        assert!(
            seen.trades.windows(2).all(|p| p[1].0 == p[0].0 + 1),
            "{:?}",
            seen.trades
        );
        let ids: Vec<u64> = seen.trades.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, acked);
    }

    // TC4: the epoch never changed, and the engine that took over last answers a resume from
    // before its takeover exactly (its history was seeded from the streams).
    assert_eq!(a.connect_held().await.1, epoch);
    let (mut socket, engine_epoch) = active.connect_held().await;
    assert_eq!(engine_epoch, epoch);
    let trades = b.get("/api/v1/trades?limit=1").await;
    let last_id = trades[0]["id"].as_u64().unwrap();
    assert_eq!(last_id, *acked.last().unwrap());
    // The seqs of the trades channel: the clients' record says which seq each trade had.
    let from = TRADES - 20;
    send(
        &mut socket,
        &json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": {"trades": from}}}),
    )
    .await;
    let ack = next_of_type(&mut socket, "resumed").await;
    assert_eq!(ack["recovered"]["trades"], true, "{ack}");
    let mut replayed = Vec::new();
    while replayed.len() < TRADES - from {
        let frame = next_of_type(&mut socket, "trade_notification").await;
        replayed.push((
            frame["seq"].as_u64().unwrap(),
            frame["payload"]["id"].as_u64().unwrap(),
        ));
    }
    let expected: Vec<(u64, u64)> = (from + 1..=TRADES)
        .map(|seq| (u64::try_from(seq).unwrap(), acked[seq - 1]))
        .collect();
    assert_eq!(replayed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_whose_storage_is_behind_redis_starts_a_new_epoch() {
    let Some(url) = redis_url("a_successor_whose_storage_is_behind_redis_starts_a_new_epoch")
    else {
        return;
    };
    let prefix = unique("behind");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (_dir, storage) = storage_file("behind");
    let (_fresh_dir, fresh) = storage_file("behind-fresh");
    let env = [SHORT_LEASE, ("CRYPTOBOT__STORAGE__PATH", storage.as_str())];
    let engine = Node::start("engine", &url, &prefix, &env, "listening on http://");
    let gateway = Node::start("gateway", &url, &prefix, &env, "listening on http://");
    let (_, old_epoch) = engine.connect().await;
    gateway.synced(old_epoch).await;
    let (mut client, _) = gateway.connect().await;
    for n in 0..3 {
        trade_retried(gateway.addr, &format!("{prefix}-{n}"), "buy").await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = next_of_type(&mut client, "trade_notification").await;
        seen.push(frame["seq"].as_u64().unwrap());
    }

    // kill -9, then a successor on an empty database: Redis names trades it does not have.
    engine.kill();
    let fresh_env = [SHORT_LEASE, ("CRYPTOBOT__STORAGE__PATH", fresh.as_str())];
    let successor = Node::start("engine", &url, &prefix, &fresh_env, "listening on http://");

    // TC0: it says why it starts a new epoch.
    assert!(
        successor.wait_logged("starting a new epoch"),
        "{:?}",
        successor.log.lock().unwrap()
    );
    assert!(
        successor.wait_logged("the storage is behind Redis"),
        "{:?}",
        successor.log.lock().unwrap()
    );
    // TC1: the gateway's client is closed with 1012 `new epoch`.
    let closed = tokio::time::timeout(GUARD, async {
        while let Some(frame) = client.next().await {
            if let Ok(Message::Close(close)) = frame {
                return close.map(|close| (u16::from(close.code), close.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, Some((1012, "new epoch".to_owned())));
    // TC2: a resume with the old epoch is not recovered.
    let (mut socket, epoch) = gateway.connect_held().await;
    assert_ne!(epoch, old_epoch);
    send(
        &mut socket,
        &json!({"type": "resume", "id": 1, "payload": {"epoch": old_epoch, "last_seq": {"trades": seen[2]}}}),
    )
    .await;
    let ack = next_of_type(&mut socket, "resumed").await;
    assert_eq!(ack["epoch"].as_u64(), Some(epoch), "{ack}");
    assert_eq!(ack["recovered"]["trades"], false, "{ack}");
}
