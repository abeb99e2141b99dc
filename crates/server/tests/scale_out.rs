//! Scale-out through Redis with real processes: one engine and gateway nodes on their own ports,
//! real WebSocket clients, and a Redis restarted in the middle of a stream.
//!
//! Needs `REDIS_URL` (the restart and outage tests also need `redis-server` on `PATH`); without
//! it each test says "skipped" on stderr and returns, and under `CI=true` it fails instead. Every
//! test uses its own key prefix and deletes its keys.

#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
mod http;
/// The skip rule of every Redis-backed test (`CI=true` makes a skip a failure), shared with the
/// services' unit tests.
#[path = "../../services/src/scale/needs_redis.rs"]
mod needs_redis;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared by the process tests, each uses part of it"
)]
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use needs_redis::{redis_url_or_skip as redis_url, skip};
use serde_json::{Value, json};
use support::{Keys, Socket, next_frame, next_of_type, say, send, unique};

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
/// Longest wait for anything expected (a hang guard, not a performance assertion).
const GUARD: Duration = Duration::from_secs(20);

/// A private `redis-server` on a free port for `test`, which stops and restarts it: the server,
/// its port and its URL. `None` when the test is skipped (no `REDIS_URL`, or no `redis-server` on
/// `PATH`), which fails under `CI=true`.
fn own_redis(test: &str) -> Option<(OwnRedis, u16, String)> {
    redis_url(test)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let Some(redis) = OwnRedis::start(port) else {
        skip(
            test,
            "redis-server not on PATH",
            "install redis-server (the test starts and stops its own)",
        );
        return None;
    };
    Some((redis, port, format!("redis://127.0.0.1:{port}")))
}

/// One `cryptobot` process, killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    /// Every line the process wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
    _dir: PathBuf,
}

impl Node {
    fn start(role: &str, url: &str, prefix: &str) -> Self {
        Self::start_with(role, url, prefix, &[])
    }

    fn start_with(role: &str, url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_marked(role, url, prefix, extra, "listening on http://")
    }

    /// Starts a node and takes its address from the log line with `marker` (a standby engine
    /// says where it answers before it listens as an engine).
    fn start_marked(
        role: &str,
        url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
        marker: &'static str,
    ) -> Self {
        let dir = std::env::temp_dir().join(unique(role));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(BIN)
            .env("CRYPTOBOT__SERVER__PORT", "0")
            .env("CRYPTOBOT__SERVER__WORKERS", "1")
            .env("CRYPTOBOT__SERVER__ROLE", role)
            .env("CRYPTOBOT__BUS__BACKEND", "redis")
            .env("CRYPTOBOT__BUS__REDIS_URL", url)
            .env("CRYPTOBOT__BUS__REDIS_PREFIX", prefix)
            .env("CRYPTOBOT__STORAGE__PATH", dir.join("db.sqlite"))
            .env("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "10")
            .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (log, rx) = read_log(&mut child, marker);
        let addr = rx
            .recv_timeout(GUARD)
            .expect("node reports its address")
            .parse()
            .expect("a socket address");
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Whether the process logged `text` (waiting a little: its last lines may still be read).
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(text))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the node did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Connects and reads the welcome; pushes wait for the client's first message.
    async fn connect_held(&self) -> (Socket, u64) {
        let url = format!("ws://{}/api/v1/ws?welcome=1", self.addr);
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let welcome = next_of_type(&mut socket, "welcome").await;
        (socket, welcome["epoch"].as_u64().unwrap())
    }

    /// Connects and subscribes to `trades` and `alerts`, so live events flow.
    async fn connect(&self) -> (Socket, u64) {
        let (mut socket, epoch) = self.connect_held().await;
        send(
            &mut socket,
            &json!({"type": "subscribe", "id": 0, "payload": {"channels": ["trades", "alerts"]}}),
        )
        .await;
        next_of_type(&mut socket, "subscribed").await;
        (socket, epoch)
    }

    /// Waits until this node serves the engine's epoch (a gateway has caught up with Redis).
    async fn synced(&self, epoch: u64) {
        let deadline = Instant::now() + GUARD;
        loop {
            let (_, seen) = self.connect_held().await;
            if seen == epoch {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never followed epoch {epoch}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post_trade(&self, id: &str) -> (u16, Value) {
        let body =
            json!({"symbol": "BTCUSDT", "side": "buy", "amount": "20", "client_order_id": id});
        let response = http::request(
            self.addr,
            "POST",
            "/api/v1/trades",
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await;
        (response.status, response.json())
    }
}

/// Collects the child's stderr lines; sends the address following `marker` once it appears.
fn read_log(
    child: &mut Child,
    marker: &'static str,
) -> (Arc<Mutex<Vec<String>>>, std::sync::mpsc::Receiver<String>) {
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split(marker).nth(1) {
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
    (log, rx)
}

/// Sends a signal (`STOP`, `CONT`, `KILL`) to a process.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until `count` trade notifications arrived; returns `(seq, trade id)` in arrival order.
async fn trades(socket: &mut Socket, count: usize) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let frame = next_frame(socket).await;
        if frame["type"] == "trade_notification" {
            seen.push((
                frame["seq"].as_u64().unwrap(),
                frame["payload"]["id"].as_u64().unwrap(),
            ));
        }
    }
    seen
}

async fn ws_trade(socket: &mut Socket, id: &str) -> Value {
    send(
        socket,
        &json!({"type": "manual_trade", "id": id, "payload": {"symbol": "BTCUSDT", "side": "buy", "amount": "20", "client_order_id": id}}),
    )
    .await;
    next_of_type(socket, "trade_executed").await
}

fn consecutive(seqs: &[(u64, u64)]) -> bool {
    seqs.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1)
}

/// An engine and two gateway nodes on `prefix`, both gateways following the engine's epoch.
async fn engine_and_two_gateways(url: &str, prefix: &str) -> (Node, Node, Node, u64) {
    let engine = Node::start("engine", url, prefix);
    let a = Node::start("gateway", url, prefix);
    let b = Node::start("gateway", url, prefix);
    let (_, epoch) = engine.connect().await;
    a.synced(epoch).await;
    b.synced(epoch).await;
    (engine, a, b, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_serve_as_one() {
    let Some(url) = redis_url("two_gateways_serve_as_one") else {
        return;
    };
    let prefix = unique("scale");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (engine, a, b, epoch) = engine_and_two_gateways(&url, &prefix).await;

    // TC0: market data reaches gateway nodes (REST tickers come from the streams).
    let deadline = Instant::now() + GUARD;
    loop {
        let response = http::request(b.addr, "GET", "/api/v1/tickers/BTCUSDT", None, b"").await;
        if response.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no ticker on a gateway node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut on_a, _) = a.connect().await;
    let (mut on_b, _) = b.connect().await;
    let (mut mover, _) = a.connect().await;

    // TC1: trades through A (WebSocket and REST) and through B reach clients on both nodes.
    let mut acked = Vec::new();
    let mut trader = a.connect().await.0;
    for n in 0..3 {
        let reply = ws_trade(&mut trader, &format!("{prefix}-ws-{n}")).await;
        assert_eq!(reply["payload"]["replayed"], false, "{reply}");
        acked.push(reply["payload"]["trade"]["id"].as_u64().unwrap());
    }
    for n in 0..2 {
        let (status, body) = a.post_trade(&format!("{prefix}-rest-a-{n}")).await;
        assert_eq!(status, 201, "{body}");
        acked.push(body["trade"]["id"].as_u64().unwrap());
    }
    let seen_by_mover = trades(&mut mover, 5).await;
    drop(mover); // it moves to node B while trades go on
    for n in 0..3 {
        let (status, body) = b.post_trade(&format!("{prefix}-rest-b-{n}")).await;
        assert_eq!(status, 201, "{body}");
        acked.push(body["trade"]["id"].as_u64().unwrap());
    }
    // TC2: the same client_order_id through the other node is the same trade, not a new one.
    let (status, body) = b.post_trade(&format!("{prefix}-rest-a-0")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], true, "{body}");
    assert_eq!(body["trade"]["id"].as_u64(), Some(acked[3]));

    let seen_a = trades(&mut on_a, 8).await;
    let seen_b = trades(&mut on_b, 8).await;
    assert_eq!(
        seen_a, seen_b,
        "same trades, same order, same seq on both nodes"
    );
    assert!(consecutive(&seen_a), "{seen_a:?}");
    let ids: Vec<u64> = seen_a.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, acked, "every acknowledged trade, in execution order");

    // TC3: the client that left node A resumes on node B and misses nothing.
    let (mut moved, epoch_b) = b.connect_held().await;
    assert_eq!(epoch_b, epoch);
    let last = seen_by_mover.last().unwrap().0;
    send(
        &mut moved,
        &json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": {"trades": last}}}),
    )
    .await;
    let resumed = next_of_type(&mut moved, "resumed").await;
    assert_eq!(resumed["recovered"]["trades"], true, "{resumed}");
    let rest = trades(&mut moved, 3).await;
    let union: Vec<(u64, u64)> = seen_by_mover.into_iter().chain(rest).collect();
    assert_eq!(union, seen_a, "nothing missed, nothing twice");

    // TC4: forwarded reads and position updates answer on a gateway node, errors with the
    // engine's code and status.
    let portfolio = http::request(a.addr, "GET", "/api/v1/portfolio", None, b"").await;
    assert_eq!(portfolio.status, 200);
    let held = portfolio.json()["positions"][0]["quantity"].clone();
    assert!(held.is_string(), "{}", portfolio.body);
    let patch = |path: &'static str| {
        http::request(
            b.addr,
            "PATCH",
            path,
            Some("application/json"),
            br#"{"stop_loss":"1"}"#,
        )
    };
    let updated = patch("/api/v1/positions/BTCUSDT").await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.json()["stop_loss"], "1", "{}", updated.body);
    let missing = patch("/api/v1/positions/ETHUSDT").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()["code"], "no_position", "{}", missing.body);
    let metrics = http::request(a.addr, "GET", "/metrics", None, b"").await;
    let text = &metrics.body;
    assert!(text.contains("cryptobot_broker_connected 1"), "{text}");
    assert!(text.contains("cryptobot_broker_engine_alive 1"), "{text}");
    let health = http::request(a.addr, "GET", "/api/v1/health", None, b"").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        health.json()["broker"]["connected"],
        true,
        "{}",
        health.body
    );

    // TC5: performance and daily profit on a gateway node are the engine's, forwarded.
    let get = |node: &Node, path: &'static str| http::request(node.addr, "GET", path, None, b"");
    let on_engine = get(&engine, "/api/v1/performance").await;
    let on_gateway = get(&a, "/api/v1/performance").await;
    assert_eq!(on_gateway.status, 200, "{}", on_gateway.body);
    assert_eq!(on_gateway.json(), on_engine.json());
    assert_eq!(
        on_gateway.json()["total"]["trades"],
        8,
        "{}",
        on_gateway.body
    );
    assert_eq!(
        on_gateway.json()["symbols"][0]["symbol"],
        "BTCUSDT",
        "{}",
        on_gateway.body
    );
    let daily = get(&b, "/api/v1/profit/daily?days=2").await;
    assert_eq!(daily.status, 200, "{}", daily.body);
    assert_eq!(
        daily.json(),
        get(&engine, "/api/v1/profit/daily?days=2").await.json()
    );
    assert_eq!(daily.json()[0]["trades"], 8, "{}", daily.body);
    let refused = get(&b, "/api/v1/profit/daily?days=0").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["code"], "invalid_query", "{}", refused.body);
}

/// Orders are one book across nodes: placed through one gateway, replayed and canceled through
/// another by the same `client_order_id`, with the `orders` channel (snapshot and updates) served
/// on a gateway node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_one_book_across_gateway_nodes() {
    let Some(url) = redis_url("orders_are_one_book_across_gateway_nodes") else {
        return;
    };
    let prefix = unique("scale-orders");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (engine, a, b, _epoch) = engine_and_two_gateways(&url, &prefix).await;
    let key = format!("{prefix}-o1");
    let order = json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.01",
        "price": "1000", "client_order_id": key});
    // TC0: a client on B subscribed to orders gets the (empty) snapshot from the engine.
    let (mut watcher, _) = b.connect_held().await;
    send(
        &mut watcher,
        &json!({"type": "subscribe", "id": 0, "payload": {"channels": ["orders"]}}),
    )
    .await;
    let snapshot = tokio::time::timeout(GUARD, next_of_type(&mut watcher, "open_orders"))
        .await
        .expect("an open_orders snapshot in time");
    assert_eq!(snapshot["payload"]["orders"], json!([]), "{snapshot}");
    // TC1: placed through A's REST API (retried until the engine answers: a node just synced
    // may still be connecting its command link).
    let deadline = Instant::now() + GUARD;
    let placed = loop {
        let response = http::request(
            a.addr,
            "POST",
            "/api/v1/orders",
            Some("application/json"),
            order.to_string().as_bytes(),
        )
        .await;
        if response.status != 503 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !matches!(placed.status, 200 | 201) {
        for line in engine
            .log
            .lock()
            .unwrap()
            .iter()
            .chain(a.log.lock().unwrap().iter())
        {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("LOG {line}");
            }
        }
    }
    assert!(matches!(placed.status, 200 | 201), "{}", placed.body);
    let placed = placed.json()["order"].clone();
    assert_eq!(placed["status"], "new");
    let update = next_of_type(&mut watcher, "order_update").await;
    assert_eq!(update["payload"]["order"], placed, "{update}");
    // TC2: the same order through B's WebSocket is replayed, another one under the key refused.
    let (mut trader, _) = b.connect_held().await;
    send(
        &mut trader,
        &json!({"type": "place_order", "id": 1, "payload": order}),
    )
    .await;
    let replayed = next_of_type(&mut trader, "order_placed").await;
    assert_eq!(replayed["payload"]["replayed"], true, "{replayed}");
    assert_eq!(replayed["payload"]["order"], placed);
    let mut other = order.clone();
    other["quantity"] = json!("0.02");
    send(
        &mut trader,
        &json!({"type": "place_order", "id": 2, "payload": other}),
    )
    .await;
    let refused = next_of_type(&mut trader, "error").await;
    assert_eq!(refused["code"], "duplicate_client_order_id", "{refused}");
    // TC3: canceled through B by key; A lists it canceled, and the watcher saw it.
    send(
        &mut trader,
        &json!({"type": "cancel_order", "id": 3, "payload": {"client_order_id": key}}),
    )
    .await;
    let canceled = next_of_type(&mut trader, "order_canceled").await;
    assert_eq!(canceled["payload"]["status"], "canceled", "{canceled}");
    let update = next_of_type(&mut watcher, "order_update").await;
    assert_eq!(update["payload"]["event"], "canceled", "{update}");
    let listed = http::request(a.addr, "GET", "/api/v1/orders", None, b"")
        .await
        .json();
    assert_eq!(listed[0]["status"], "canceled", "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

/// A private `redis-server` on a fixed port, so it can be stopped and started again.
struct OwnRedis {
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child: Some(child) };
        let deadline = Instant::now() + GUARD;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_stream() {
    let Some((mut redis, port, url)) = own_redis("redis_restarted_mid_stream") else {
        return;
    };
    let prefix = unique("restart");
    let engine = Node::start("engine", &url, &prefix);
    let gateway = Node::start("gateway", &url, &prefix);
    let (_, epoch) = engine.connect().await;
    gateway.synced(epoch).await;

    let (mut watcher, _) = gateway.connect().await;
    let (mut leaver, _) = gateway.connect().await;
    let mut acked = Vec::new();
    for n in 0..3 {
        let (status, body) = engine.post_trade(&format!("{prefix}-before-{n}")).await;
        assert_eq!(status, 201, "{body}");
        acked.push(body["trade"]["id"].as_u64().unwrap());
    }
    let mut seen = trades(&mut watcher, 3).await;
    let leaver_seen = trades(&mut leaver, 3).await;
    drop(leaver);

    // TC0: Redis goes away: clients of the gateway are told on `alerts`.
    redis.stop();
    let alert = loop {
        let alert = next_of_type(&mut watcher, "alert").await;
        if alert["payload"]["alert_type"] == "feed_stalled" {
            break alert;
        }
    };
    assert_eq!(alert["snapshot"], true, "{alert}");
    assert_eq!(alert["payload"]["severity"], "critical", "{alert}");
    // The gateway's health says so too, at once (no wait for the engine's timeout).
    let health = http::request(gateway.addr, "GET", "/api/v1/health", None, b"").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(
        health.json()["broker"]["connected"],
        false,
        "{}",
        health.body
    );
    assert_eq!(health.json()["role"], "gateway", "{}", health.body);

    // TC1: trades go on at the engine meanwhile; nothing is lost.
    for n in 0..3 {
        let (status, body) = engine.post_trade(&format!("{prefix}-during-{n}")).await;
        assert_eq!(status, 201, "{body}");
        acked.push(body["trade"]["id"].as_u64().unwrap());
    }

    // TC2: Redis is back (empty): the gateway says so and delivers what was buffered, in order.
    let _redis = OwnRedis::start(port).expect("redis-server restarts");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let mut resumed_alert = false;
    while seen.len() < 6 || !resumed_alert {
        let frame = next_frame(&mut watcher).await;
        match frame["type"].as_str() {
            Some("alert") if frame["payload"]["alert_type"] == "feed_resumed" => {
                resumed_alert = true
            }
            Some("trade_notification") => seen.push((
                frame["seq"].as_u64().unwrap(),
                frame["payload"]["id"].as_u64().unwrap(),
            )),
            _ => {}
        }
    }
    assert!(resumed_alert, "clients are told the broker is back");
    assert!(consecutive(&seen), "{seen:?}");
    let ids: Vec<u64> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, acked);

    // TC3: the client that left during the outage resumes and gets exactly what it missed.
    let (mut back, _) = gateway.connect_held().await;
    let last = leaver_seen.last().unwrap().0;
    send(
        &mut back,
        &json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": {"trades": last}}}),
    )
    .await;
    let resumed = next_of_type(&mut back, "resumed").await;
    assert_eq!(resumed["recovered"]["trades"], true, "{resumed}");
    let rest = trades(&mut back, 3).await;
    let union: Vec<(u64, u64)> = leaver_seen.into_iter().chain(rest).collect();
    assert_eq!(union, seen);
}

/// An engine started on a prefix whose lease another engine holds: it waits as a standby (its
/// stderr piped for `read_log`).
fn second_engine(url: &str, prefix: &str, lease: (&str, &str)) -> std::process::Child {
    let dir = std::env::temp_dir().join(unique("second-engine"));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new(BIN)
        .env("CRYPTOBOT__SERVER__PORT", "0")
        .env("CRYPTOBOT__SERVER__ROLE", "engine")
        .env("CRYPTOBOT__BUS__BACKEND", "redis")
        .env("CRYPTOBOT__BUS__REDIS_URL", url)
        .env("CRYPTOBOT__BUS__REDIS_PREFIX", prefix)
        .env("CRYPTOBOT__STORAGE__PATH", dir.join("db.sqlite"))
        .env(lease.0, lease.1)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_waiting_for_the_lease_stops_at_once_on_sigterm() {
    let Some(url) = redis_url("an_engine_waiting_for_the_lease_stops_at_once_on_sigterm") else {
        return;
    };
    let prefix = unique("lease-term");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    // A 30 s lease: the second engine would wait 45 s for it.
    let long_lease = ("CRYPTOBOT__BUS__LEASE_TTL_MS", "30000");
    let _first = Node::start_with("engine", &url, &prefix, &[long_lease]);
    let mut second = second_engine(&url, &prefix, long_lease);
    let (log, standby) = read_log(&mut second, "standby on http://");
    standby
        .recv_timeout(GUARD)
        .expect("the waiting engine says where it answers");
    let pid = second.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    // TC0: it exits within a few seconds, not when its wait for the lease ends, and cleanly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            panic!(
                "SIGTERM ignored while waiting for the lease: {}",
                log.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_prefix_is_refused_and_a_successor_starts() {
    let Some(url) =
        redis_url("a_second_engine_on_the_same_prefix_is_refused_and_a_successor_starts")
    else {
        return;
    };
    let prefix = unique("lease");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let mut first = Node::start_with("engine", &url, &prefix, &[SHORT_LEASE]);
    // TC0: a second engine waits for the lease, sees it renewed, and exits with a clear error.
    let mut second = second_engine(&url, &prefix, SHORT_LEASE);
    let (log, standby) = read_log(&mut second, "standby on http://");
    // TC1: while it waits it answers HTTP: 503, standby (a load balancer skips it).
    let addr: SocketAddr = standby
        .recv_timeout(GUARD)
        .expect("the waiting engine says where it answers")
        .parse()
        .expect("a socket address");
    let health = http::request(addr, "GET", "/api/v1/health", None, b"").await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.json()["status"], "standby", "{}", health.body);
    assert!(
        health.json()["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&prefix)),
        "{}",
        health.body
    );
    let deadline = Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the second engine kept waiting");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Give the log reader a moment to see the last lines after the exit.
    std::thread::sleep(Duration::from_millis(100));
    let stderr = log.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another engine is running"), "{stderr}");
    assert!(stderr.contains(&prefix), "{stderr}");
    // The first engine was not disturbed.
    let (status, body) = first.post_trade(&format!("{prefix}-after")).await;
    assert_eq!(status, 201, "{body}");
    // TC1: a graceful stop releases the lease, so a successor starts at once.
    let pid = first.child.id().to_string();
    let stopped = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let exit = first.child.wait().expect("first engine exits");
    assert!(exit.success(), "graceful stop: {exit:?}");
    drop(first);
    let successor = Node::start("engine", &url, &prefix);
    let (_, epoch) = successor.connect().await;
    assert!(epoch > 0);
}

#[test]
fn roles_and_redis_settings_are_checked_before_start() {
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let output = command.output().expect("binary runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // TC0: a gateway needs the Redis backend (the flag wins over the environment)
    let (code, out) = run(
        &["--role", "gateway"],
        &[("CRYPTOBOT__SERVER__ROLE", "all")],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("server.role"), "{out}");
    // TC1: an unknown role
    let (code, out) = run(&["--role=leader"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("leader"), "{out}");
    // TC2: TLS URLs are refused with a reason
    let (code, out) = run(
        &["--role", "engine"],
        &[
            ("CRYPTOBOT__BUS__BACKEND", "redis"),
            ("CRYPTOBOT__BUS__REDIS_URL", "rediss://example:6380"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bus.redis_url"), "{out}");
    // TC3: a missing value
    let (code, out) = run(&["--role"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--role needs"), "{out}");
    // TC4: a gateway's read timeout must leave room for its 250 ms poll
    let (code, out) = run(
        &["--role", "gateway"],
        &[
            ("CRYPTOBOT__BUS__BACKEND", "redis"),
            ("CRYPTOBOT__BUS__READ_TIMEOUT_MS", "250"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("bus.read_timeout_ms: must be between 500 and 60000"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_buffer_is_reported_not_hidden() {
    let Some((mut redis, port, url)) =
        own_redis("an_outage_longer_than_the_buffer_is_reported_not_hidden")
    else {
        return;
    };
    let prefix = unique("overflow");
    // A buffer of 5 envelopes: the tickers alone (5 symbols x 10/s) overflow it within a second.
    let engine = Node::start_with(
        "engine",
        &url,
        &prefix,
        &[("CRYPTOBOT__BUS__PUBLISH_BUFFER", "5")],
    );
    let gateway = Node::start("gateway", &url, &prefix);
    let (_, epoch) = engine.connect().await;
    gateway.synced(epoch).await;
    let (mut watcher, _) = gateway.connect().await;
    let (status, body) = engine.post_trade(&format!("{prefix}-before")).await;
    assert_eq!(status, 201, "{body}");
    let before = trades(&mut watcher, 1).await;

    redis.stop();
    loop {
        let alert = next_of_type(&mut watcher, "alert").await;
        if alert["payload"]["alert_type"] == "feed_stalled" {
            break;
        }
    }
    for n in 0..2 {
        let (status, body) = engine.post_trade(&format!("{prefix}-lost-{n}")).await;
        assert_eq!(status, 201, "{body}");
    }
    // Long enough for the tickers to push the two trades out of the 5-envelope buffer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _redis = OwnRedis::start(port).expect("redis-server restarts");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };

    // TC0: the engine says how many events other nodes did not get.
    let lost = loop {
        let alert = next_of_type(&mut watcher, "alert").await;
        if alert["payload"]["message"]
            .as_str()
            .is_some_and(|text| text.contains("were not delivered"))
        {
            break alert;
        }
    };
    assert_eq!(lost["payload"]["severity"], "critical", "{lost}");
    assert_ne!(lost["snapshot"], true, "a sequenced engine event: {lost}");

    // TC1: a resume across the hole says recovered: false, even with no later trade.
    let eventually = Instant::now() + GUARD;
    loop {
        let (mut back, _) = gateway.connect_held().await;
        send(
            &mut back,
            &json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": {"trades": before[0].0}}}),
        )
        .await;
        let resumed = next_of_type(&mut back, "resumed").await;
        if resumed["recovered"]["trades"] == false {
            break;
        }
        // Before the gateway has read the marker, the resume is (still) honestly complete.
        assert!(
            Instant::now() < eventually,
            "the hole was never reported: {resumed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = http::request(gateway.addr, "GET", "/metrics", None, b"").await;
    // One hole per channel that lost events (tickers too), so at least the one of `trades`.
    let gaps: u64 = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("cryptobot_broker_stream_gaps_total "))
        .and_then(|value| value.parse().ok())
        .expect("the counter is exported");
    assert!(gaps >= 1, "{}", metrics.body);
}

/// The lease time-to-live of these tests (the default is 10 s), so that a successor starts soon.
const SHORT_LEASE: (&str, &str) = ("CRYPTOBOT__BUS__LEASE_TTL_MS", "2000");

/// A storage file two engines share, as a standby engine on the same volume does.
fn shared_storage() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("shared-storage"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db.sqlite").to_string_lossy().into_owned();
    (dir, path)
}

/// A trade through `node` with the key `id`, retried with the same key while it answers 503
/// (the engine is gone or not yet back): the trade's id, executed once, and how many 503s it
/// got first.
async fn trade_retried(node: SocketAddr, id: &str) -> (u64, u32) {
    let body = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "20", "client_order_id": id});
    let deadline = Instant::now() + 2 * GUARD;
    let mut refused = 0;
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
            return (response.json()["trade"]["id"].as_u64().unwrap(), refused);
        }
        assert_eq!(response.status, 503, "{}", response.body);
        refused += 1;
        assert!(Instant::now() < deadline, "trade {id} never executed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_restart_continues_the_epoch_and_clients_miss_nothing() {
    let Some(url) = redis_url("an_engine_restart_continues_the_epoch_and_clients_miss_nothing")
    else {
        return;
    };
    let prefix = unique("restart");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (_dir, storage) = shared_storage();
    let env = [SHORT_LEASE, ("CRYPTOBOT__STORAGE__PATH", storage.as_str())];
    let engine = Node::start_with("engine", &url, &prefix, &env);
    let a = Node::start_with("gateway", &url, &prefix, &env);
    let b = Node::start_with("gateway", &url, &prefix, &env);
    let (_, epoch) = engine.connect().await;
    a.synced(epoch).await;
    b.synced(epoch).await;
    let (mut on_a, _) = a.connect().await;
    let (on_b, _) = b.connect().await;

    // Trades go on through both gateways all along: before the crash, while no engine runs
    // (they answer 503 or wait for the successor; each is retried with its key), and after.
    let (addr_a, addr_b, keys) = (a.addr, b.addr, prefix.clone());
    let trading = tokio::spawn(async move {
        let (mut acked, mut refused) = (Vec::new(), 0);
        for n in 0..40 {
            let node = if n % 2 == 0 { addr_a } else { addr_b };
            let (id, retries) = trade_retried(node, &format!("{keys}-{n}")).await;
            acked.push(id);
            refused += retries;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (acked, refused)
    });
    let old_seen = trades(&mut on_a, 8).await;

    // kill -9 of the engine mid-stream; clients connect to the gateways while none runs; then
    // a successor (not a standby: a plain restart) takes over once the lease lapsed.
    drop(engine);
    let mut clients = vec![(on_a, old_seen), (on_b, Vec::new())];
    for node in [&a, &b] {
        let (socket, seen) = node.connect().await;
        assert_eq!(
            seen, epoch,
            "the gateway keeps the epoch while no engine runs"
        );
        clients.push((socket, Vec::new()));
    }
    let successor = Node::start_with("engine", &url, &prefix, &env);
    let (acked, refused) = tokio::time::timeout(2 * GUARD, trading)
        .await
        .expect("the trades end")
        .expect("every trade executed");
    assert!(successor.logged("continuing the epoch in Redis"));
    say(format_args!(
        "engine restart: 40 trades through two gateways, {refused} answers 503 meanwhile, each retried"
    ));
    let mut unique_ids = acked.clone();
    unique_ids.sort_unstable();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), acked.len(), "each key once: {acked:?}");

    // TC0: no client is closed: each gets the trades in order, seq without gap or duplicate,
    // across the restart; those connected before the crash get every acknowledged trade, those
    // connected during the gap every one from where they joined.
    for (n, (mut socket, mut seen)) in clients.into_iter().enumerate() {
        while seen
            .last()
            .is_none_or(|(_, id)| id != acked.last().unwrap())
        {
            seen.extend(trades(&mut socket, 1).await);
        }
        assert!(consecutive(&seen), "{seen:?}");
        let ids: Vec<u64> = seen.iter().map(|(_, id)| *id).collect();
        if n < 2 {
            assert_eq!(ids, acked);
        } else {
            assert!(acked.ends_with(&ids), "{ids:?} of {acked:?}");
        }
    }
    // TC1: the successor answers in the same epoch, and a resume from before the crash is
    // exact on a gateway.
    assert_eq!(successor.connect_held().await.1, epoch);
    let (mut socket, _) = b.connect_held().await;
    send(
        &mut socket,
        &json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": {"trades": 4}}}),
    )
    .await;
    let ack = next_of_type(&mut socket, "resumed").await;
    assert_eq!(ack["recovered"]["trades"], true, "{ack}");
    let replayed: Vec<u64> = trades(&mut socket, acked.len() - 4)
        .await
        .iter()
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(replayed, acked[4..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_paused_past_its_lease_is_fenced_and_its_successor_trades_exactly_once() {
    let Some(url) = redis_url(
        "an_engine_paused_past_its_lease_is_fenced_and_its_successor_trades_exactly_once",
    ) else {
        return;
    };
    let prefix = unique("fence");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (_dir, storage) = shared_storage();
    let env = [SHORT_LEASE, ("CRYPTOBOT__STORAGE__PATH", storage.as_str())];
    let mut first = Node::start_with("engine", &url, &prefix, &env);
    let gateway = Node::start_with("gateway", &url, &prefix, &env);
    let (_, first_epoch) = first.connect().await;
    gateway.synced(first_epoch).await;
    let (mut watcher, _) = gateway.connect().await;
    let (status, body) = gateway.post_trade(&format!("{prefix}-before")).await;
    assert_eq!(status, 201, "{body}");
    let before = trades(&mut watcher, 1).await;

    // The engine stalls; a second engine waiting for the lease takes it once it lapsed, and
    // continues the epoch: the fence compares run tokens, not epochs.
    first.signal("STOP");
    let second = Node::start_with("engine", &url, &prefix, &env);
    let (_, second_epoch) = second.connect().await;
    assert_eq!(second_epoch, first_epoch);
    assert!(second.logged("continuing the epoch in Redis"));
    // The first engine wakes up long after its lease lapsed.
    first.signal("CONT");

    // TC0: trades through the gateway from right away and over a few seconds (time for a
    // replaced engine that was still serving to reconnect and take its share): every one
    // executed exactly once.
    let mut ids = Vec::new();
    for n in 0..20 {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, body) = gateway.post_trade(&format!("{prefix}-after-{n}")).await;
        assert_eq!(status, 201, "trade {n}: {body}");
        assert_eq!(body["replayed"], false, "{body}");
        ids.push(body["trade"]["id"].as_u64().unwrap());
    }
    assert!(
        ids.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "one engine numbers the trades: {ids:?}"
    );

    // TC1: the replaced engine stopped at once, with exit code 3 and the reason.
    assert_eq!(first.exit_code(), Some(3));
    assert!(
        first.logged("lost the engine lease"),
        "{:?}",
        first.log.lock().unwrap()
    );

    // TC2: only the successor published: the client (connected all along) got each trade
    // once, in order, seq continuing, and the trades stream holds exactly those.
    let mut seen = before;
    seen.extend(trades(&mut watcher, 20).await);
    assert!(consecutive(&seen), "{seen:?}");
    assert_eq!(
        seen.iter().skip(1).map(|(_, id)| *id).collect::<Vec<_>>(),
        ids
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{prefix}:stream:trades"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries.ids.len(), 21);
    for (entry, (seq, _)) in entries.ids.iter().zip(&seen) {
        assert_eq!(entry.id, format!("{seq}-0"));
        assert_eq!(entry.get::<u64>("epoch"), Some(first_epoch), "{}", entry.id);
    }
    // TC3: the shared storage holds each trade once.
    let listed = http::request(gateway.addr, "GET", "/api/v1/trades?limit=100", None, b"").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    let stored: Vec<u64> = listed
        .as_array()
        .or_else(|| listed["trades"].as_array())
        .expect("a list of trades")
        .iter()
        .map(|trade| trade["id"].as_u64().unwrap())
        .collect();
    assert_eq!(stored.len(), 21, "{stored:?}");
}

/// Longest a health probe may take here: far below `bus.command_timeout_ms` (10 s in this test),
/// so a probe that asks the engine and waits for the timeout fails the test.
const PROBE_BOUND: Duration = Duration::from_secs(3);

async fn probe(node: &Node) -> (u16, Value) {
    let response = tokio::time::timeout(
        PROBE_BOUND,
        http::request(node.addr, "GET", "/api/v1/health", None, b""),
    )
    .await
    .expect("a health probe answers without waiting for the engine or for Redis");
    (response.status, response.json())
}

/// `GET /readyz` of `node`, which must answer within the probe bound whatever is down.
async fn readiness(node: &Node) -> (u16, Value) {
    let response = tokio::time::timeout(
        PROBE_BOUND,
        http::request(node.addr, "GET", "/readyz", None, b""),
    )
    .await
    .expect("a readiness probe answers without waiting for the engine or for Redis");
    (response.status, response.json())
}

/// Probes until the answer is `status` with `check` true of the body.
async fn probe_until(node: &Node, status: u16, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + GUARD;
    loop {
        let (got, body) = probe(node).await;
        if got == status && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "health never became {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_health_answers_at_once_with_a_dead_engine_and_during_a_redis_outage() {
    let Some((redis, _, url)) =
        own_redis("gateway_health_answers_at_once_with_a_dead_engine_and_during_a_redis_outage")
    else {
        return;
    };
    let prefix = unique("health");
    let env = [SHORT_LEASE, ("CRYPTOBOT__BUS__COMMAND_TIMEOUT_MS", "10000")];
    let engine = Node::start_with("engine", &url, &prefix, &env);
    let gateway = Node::start_with("gateway", &url, &prefix, &env);
    let (_, epoch) = engine.connect().await;
    gateway.synced(epoch).await;
    // TC0: healthy, and ready: a gateway checks its broker and the engine's liveness mark; the
    // engine its own engine, feed, storage and broker.
    let body = probe_until(&gateway, 200, |_| true).await;
    assert_eq!(body["trading_engine"], "ok", "{body}");
    let (status, ready) = readiness(&gateway).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["role"], "gateway");
    assert_eq!(
        ready["checks"],
        serde_json::json!({"broker": "ok", "engine": "ok"})
    );
    let (status, ready) = readiness(&engine).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["checks"],
        serde_json::json!({"broker": "ok", "engine": "ok", "feed": "ok", "storage": "ok"})
    );

    // TC1: the engine dies: every probe answers at once, and soon with 503 (the engine stopped
    // renewing its lease), while the broker link is fine.
    drop(engine);
    let body = probe_until(&gateway, 503, |_| true).await;
    assert_eq!(body["trading_engine"], "unavailable", "{body}");
    assert_eq!(body["broker"]["connected"], true, "{body}");
    let (status, ready) = readiness(&gateway).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["engine"], "no engine alive", "{ready}");
    assert_eq!(ready["checks"]["broker"], "ok", "{ready}");
    let metrics = http::request(gateway.addr, "GET", "/metrics", None, b"").await;
    assert!(
        metrics.body.contains("cryptobot_broker_engine_alive 0"),
        "{}",
        metrics.body
    );
    // A paused engine is the same as a dead one.
    let engine = Node::start_with("engine", &url, &prefix, &env);
    probe_until(&gateway, 200, |_| true).await;
    engine.signal("STOP");
    let body = probe_until(&gateway, 503, |_| true).await;
    assert_eq!(body["trading_engine"], "unavailable", "{body}");
    engine.signal("CONT");
    drop(engine);
    let engine = Node::start_with("engine", &url, &prefix, &env);
    let (_, epoch) = engine.connect().await;
    gateway.synced(epoch).await;
    probe_until(&gateway, 200, |_| true).await;

    // TC2: Redis stops answering (SIGSTOP: connections hang as in a partition): every probe
    // answers at once, and soon with 503 and the broker down.
    let (mut watcher, _) = gateway.connect().await;
    let redis_pid = redis.child.as_ref().unwrap().id();
    signal(redis_pid, "STOP");
    let body = probe_until(&gateway, 503, |body| body["broker"]["connected"] == false).await;
    assert_eq!(body["trading_engine"], "unavailable", "{body}");
    // Not ready, at once and saying why, but alive: a restart would not bring Redis back.
    let (status, ready) = readiness(&gateway).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["broker"], "disconnected", "{ready}");
    assert_eq!(
        ready["checks"]["engine"], "unreachable: broker disconnected",
        "{ready}"
    );
    let live = tokio::time::timeout(
        PROBE_BOUND,
        http::request(gateway.addr, "GET", "/livez", None, b""),
    )
    .await
    .expect("liveness answers at once");
    assert_eq!(live.status, 200, "{}", live.body);
    let alert = loop {
        let alert = next_of_type(&mut watcher, "alert").await;
        if alert["payload"]["alert_type"] == "feed_stalled" {
            break alert;
        }
    };
    assert_eq!(alert["snapshot"], true, "{alert}");
    // TC3: a client connecting during the outage is told when it subscribes to alerts.
    let (mut late, _) = gateway.connect().await;
    let alert = next_of_type(&mut late, "alert").await;
    assert_eq!(alert["payload"]["alert_type"], "feed_stalled", "{alert}");
    assert_eq!(alert["payload"]["severity"], "critical", "{alert}");
    // The engine's own health stays 200: its clients and trading go on.
    let (status, body) = probe(&engine).await;
    assert_eq!(status, 200, "{body}");

    // TC4: Redis is back: both clients hear it, and the gateway is healthy again.
    signal(redis_pid, "CONT");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    for socket in [&mut watcher, &mut late] {
        loop {
            let alert = next_of_type(socket, "alert").await;
            if alert["payload"]["alert_type"] == "feed_resumed" {
                break;
            }
        }
    }
    probe_until(&gateway, 200, |body| body["broker"]["connected"] == true).await;
}

/// The families (`# TYPE` lines) a `/metrics` body declares.
fn metric_families(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_exports_only_the_series_it_owns() {
    let Some(url) = redis_url("a_gateway_exports_only_the_series_it_owns") else {
        return;
    };
    let prefix = unique("metrics");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let engine = Node::start("engine", &url, &prefix);
    let gateway = Node::start("gateway", &url, &prefix);
    let (_, epoch) = engine.connect().await;
    gateway.synced(epoch).await;
    // A trade, so the engine's counters are not all at zero and the gateway forwarded one command.
    let (status, trade) = gateway.post_trade("metrics-1").await;
    assert_eq!(status, 201, "{trade}");

    let on_engine = http::request(engine.addr, "GET", "/metrics", None, b"").await;
    let on_gateway = http::request(gateway.addr, "GET", "/metrics", None, b"").await;
    assert_eq!(on_engine.status, 200);
    assert_eq!(on_gateway.status, 200);
    let (engine_text, gateway_text) = (&on_engine.body, &on_gateway.body);
    // Labelled by symbol, side and origin; the other series of the labels exist at 0.
    assert!(
        engine_text.contains("\ncryptobot_trades_executed_total{origin=\"manual\",side=\"buy\",symbol=\"BTCUSDT\"} 1\n"),
        "{engine_text}"
    );
    let engine_families = metric_families(engine_text);
    let gateway_families = metric_families(gateway_text);
    let engine_only = [
        "cryptobot_trades_executed_total",
        "cryptobot_trades_rejected_total",
        "cryptobot_signals_generated_total",
        "cryptobot_alerts_raised_total",
        "cryptobot_ticks_published_total",
        "cryptobot_market_feed_connected",
        "cryptobot_portfolio_cash",
        "cryptobot_portfolio_total_value",
        "cryptobot_broker_publish_backlog",
    ];
    for family in engine_only {
        assert!(engine_families.contains(&family), "{family}: {engine_text}");
        assert!(
            !gateway_families.contains(&family),
            "{family}: {gateway_text}"
        );
    }
    let gateway_only = [
        "cryptobot_broker_engine_alive",
        "cryptobot_broker_stream_gaps_total",
        "cryptobot_broker_follow_lag_seconds",
        "cryptobot_broker_entries_behind",
    ];
    for family in gateway_only {
        assert!(
            gateway_families.contains(&family),
            "{family}: {gateway_text}"
        );
        assert!(
            !engine_families.contains(&family),
            "{family}: {engine_text}"
        );
    }
    for family in [
        "cryptobot_build_info",
        "cryptobot_ws_connections_open",
        "cryptobot_broker_connected",
        "cryptobot_ws_delivery_seconds",
        "cryptobot_command_seconds",
    ] {
        assert!(
            engine_families.contains(&family) && gateway_families.contains(&family),
            "{family}"
        );
    }
    assert!(
        gateway_text.contains("\ncryptobot_broker_commands_total 1\n"),
        "{gateway_text}"
    );
    let version = env!("CARGO_PKG_VERSION");
    for (text, role) in [(engine_text, "engine"), (gateway_text, "gateway")] {
        let line = format!("\ncryptobot_build_info{{role=\"{role}\",version=\"{version}\"}} 1\n");
        assert!(text.contains(&line), "{text}");
    }

    // The follower's lag is the age of the last entry it applied: it moves with every ticker
    // the engine publishes (several a second), and the gateway keeps up (nothing behind for
    // long). Bounded: 50 scrapes, 100 ms apart.
    let lag = |text: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix("cryptobot_broker_follow_lag_seconds "))
            .and_then(|value| value.parse::<f64>().ok())
    };
    let first = lag(gateway_text).expect("a lag after the first applied entry");
    assert!(first >= 0.0, "{gateway_text}");
    let mut moved = false;
    let mut caught_up = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = http::request(gateway.addr, "GET", "/metrics", None, b"")
            .await
            .body;
        moved |= lag(&text).is_some_and(|now| now != first);
        caught_up |= text.contains("\ncryptobot_broker_entries_behind 0\n");
        if moved && caught_up {
            break;
        }
    }
    assert!(
        moved && caught_up,
        "lag moved: {moved}, caught up: {caught_up}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_engine_takes_over_from_a_killed_one_with_the_books() {
    let Some(url) = redis_url("a_standby_engine_takes_over_from_a_killed_one_with_the_books")
    else {
        return;
    };
    let prefix = unique("standby");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (_dir, storage) = shared_storage();
    let env = [SHORT_LEASE, ("CRYPTOBOT__STORAGE__PATH", storage.as_str())];
    let active = Node::start_with("engine", &url, &prefix, &env);
    let gateway = Node::start_with("gateway", &url, &prefix, &env);
    let (_, first_epoch) = active.connect().await;
    gateway.synced(first_epoch).await;
    let standby_env = [
        SHORT_LEASE,
        ("CRYPTOBOT__STORAGE__PATH", storage.as_str()),
        ("CRYPTOBOT__BUS__STANDBY", "true"),
    ];
    let mut standby =
        Node::start_marked("engine", &url, &prefix, &standby_env, "standby on http://");

    // TC0: the standby waits past 1.5 lease times (where a second engine without `bus.standby`
    // exits 1) and answers every probe 503 `standby`.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        standby.child.try_wait().expect("try_wait").is_none(),
        "the standby gave up: {:?}",
        standby.log.lock().unwrap()
    );
    let ready = http::request(standby.addr, "GET", "/readyz", None, b"").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["status"], "standby", "{}", ready.body);
    let (status, before) = gateway.post_trade(&format!("{prefix}-before")).await;
    assert_eq!(status, 201, "{before}");
    let before_id = before["trade"]["id"].as_u64().unwrap();

    // TC1: the active engine dies; the standby takes the lease and the gateway trades again
    // (a retry with the same client_order_id while the takeover runs).
    active.signal("KILL");
    let killed = Instant::now();
    let id = format!("{prefix}-after");
    let after = loop {
        let (status, body) = gateway.post_trade(&id).await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 503, "during the takeover: {body}");
        assert!(killed.elapsed() < GUARD, "no takeover: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gap = killed.elapsed();
    assert!(standby.logged("took the engine lease"));
    eprintln!("takeover: first trade through the gateway {gap:?} after kill -9 (lease ttl 2 s)");

    // TC2: the successor carries the books on: the ids continue and both trades are listed.
    assert_eq!(
        after["trade"]["id"].as_u64(),
        Some(before_id + 1),
        "{after}"
    );
    let listed = http::request(gateway.addr, "GET", "/api/v1/trades?limit=10", None, b"").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<u64> = listed
        .json()
        .as_array()
        .expect("a list of trades")
        .iter()
        .map(|trade| trade["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![before_id + 1, before_id]);
    // TC3: it serves as the engine on the standby's address.
    let ready = http::request(standby.addr, "GET", "/readyz", None, b"").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

/// A REST command on a gateway node, retried while it answers 503 (a node just synced may still
/// be connecting its command link).
async fn post_until_served(node: &Node, path: &str, body: &str) -> (u16, Value) {
    let deadline = Instant::now() + GUARD;
    loop {
        let content_type = (!body.is_empty()).then_some("application/json");
        let response = http::request(node.addr, "POST", path, content_type, body.as_bytes()).await;
        if response.status != 503 || Instant::now() > deadline {
            return (response.status, response.json());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_controls_work_through_gateway_nodes() {
    let Some(url) = redis_url("runtime_controls_work_through_gateway_nodes") else {
        return;
    };
    let prefix = unique("scale-controls");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let (engine, a, b, _epoch) = engine_and_two_gateways(&url, &prefix).await;
    // TC0: a client of B subscribed to `bot` gets the engine's state as a snapshot.
    let (mut watcher, _) = b.connect_held().await;
    send(
        &mut watcher,
        &json!({"type": "subscribe", "id": 0, "payload": {"channels": ["bot"]}}),
    )
    .await;
    let snapshot = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["payload"]["state"], "paused", "{snapshot}");
    // TC1: resumed through A's REST API; B's client sees the engine's event.
    let (status, resumed) = post_until_served(&a, "/api/v1/bot/resume", "").await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert_eq!(resumed["changed_by"], "anonymous");
    let pushed = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(
        (pushed["seq"].as_u64(), pushed["payload"].clone()),
        (Some(1), resumed)
    );
    // TC2: paused through B's WebSocket; the engine itself answers the same state.
    let (mut trader, _) = b.connect_held().await;
    send(&mut trader, &json!({"type": "pause_trading", "id": "p"})).await;
    let paused = next_of_type(&mut trader, "bot_state").await;
    assert_eq!(paused["payload"]["state"], "paused", "{paused}");
    let pushed = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(pushed["seq"], 2);
    let on_engine = http::request(engine.addr, "GET", "/api/v1/bot", None, b"")
        .await
        .json();
    assert_eq!(on_engine, paused["payload"]);
    // TC3: a force exit forwarded from B, its refusal code intact, then replayed through A.
    send(
        &mut trader,
        &json!({"type": "force_exit", "id": "x0", "payload": {"symbol": "ETHUSDT"}}),
    )
    .await;
    let refused = next_of_type(&mut trader, "error").await;
    assert_eq!(refused["code"], "no_position", "{refused}");
    let bought = ws_trade(&mut trader, &format!("{prefix}-buy")).await;
    let quantity = bought["payload"]["trade"]["quantity"].clone();
    let key = format!("{prefix}-exit");
    send(
        &mut trader,
        &json!({"type": "force_exit", "id": "x1", "payload": {"symbol": "BTCUSDT", "client_order_id": key}}),
    )
    .await;
    let exited = next_of_type(&mut trader, "position_exited").await;
    assert_eq!(exited["payload"]["trade"]["quantity"], quantity, "{exited}");
    assert_eq!(exited["payload"]["trade"]["origin"], "force_exit");
    let body = json!({"client_order_id": key}).to_string();
    let (status, replayed) = post_until_served(&a, "/api/v1/positions/BTCUSDT/exit", &body).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replayed"], true);
    assert_eq!(replayed["trade"], exited["payload"]["trade"]);
}
