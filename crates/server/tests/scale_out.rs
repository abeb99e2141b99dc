//! Scale-out through Redis with real processes: one engine and gateway nodes on their own ports,
//! real WebSocket clients, and a Redis restarted in the middle of a stream.
//!
//! Needs `REDIS_URL` (the restart test also needs `redis-server` on `PATH`); without it each test
//! says "skipped" on stderr and returns. Every test uses its own key prefix and deletes its keys.

#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
/// Longest wait for anything expected (a hang guard, not a performance assertion).
const GUARD: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        skipped(test, "REDIS_URL not set");
    }
    url
}

/// Says so on the real stderr: the test harness captures `eprintln!` of passing tests, and a
/// skip must never be silent.
fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cbtest-{name}-{}-{nanos}", std::process::id())
}

/// Deletes every key of a test's prefix when dropped.
struct Keys {
    url: String,
    prefix: String,
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

/// One `cryptobot` process, killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Node {
    fn start(role: &str, url: &str, prefix: &str) -> Self {
        Self::start_with(role, url, prefix, &[])
    }

    fn start_with(role: &str, url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
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
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(GUARD)
            .expect("node reports its address")
            .parse()
            .expect("a socket address");
        Self {
            child,
            addr,
            _dir: dir,
        }
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

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_frame(socket: &mut Socket) -> Value {
    let wait = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.expect("frame") {
                return serde_json::from_str::<Value>(&text).expect("frames are JSON");
            }
        }
        panic!("socket closed");
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .expect("a frame in time")
}

async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = next_frame(socket).await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

async fn send(socket: &mut Socket, message: &Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .expect("send");
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
    let engine = Node::start("engine", &url, &prefix);
    let a = Node::start("gateway", &url, &prefix);
    let b = Node::start("gateway", &url, &prefix);
    let (_, epoch) = engine.connect().await;
    a.synced(epoch).await;
    b.synced(epoch).await;

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
    let health = http::request(a.addr, "GET", "/api/v1/health", None, b"").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        health.json()["broker"]["connected"],
        true,
        "{}",
        health.body
    );
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
    if redis_url("redis_restarted_mid_stream").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let Some(mut redis) = OwnRedis::start(port) else {
        skipped("redis_restarted_mid_stream", "redis-server not on PATH");
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
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
    let mut first = Node::start("engine", &url, &prefix);
    // TC0: a second engine waits for the lease, sees it renewed, and exits with a clear error.
    let dir = std::env::temp_dir().join(unique("second-engine"));
    std::fs::create_dir_all(&dir).unwrap();
    let second = Command::new(BIN)
        .env("CRYPTOBOT__SERVER__PORT", "0")
        .env("CRYPTOBOT__SERVER__ROLE", "engine")
        .env("CRYPTOBOT__BUS__BACKEND", "redis")
        .env("CRYPTOBOT__BUS__REDIS_URL", &url)
        .env("CRYPTOBOT__BUS__REDIS_PREFIX", &prefix)
        .env("CRYPTOBOT__STORAGE__PATH", dir.join("db.sqlite"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_buffer_is_reported_not_hidden() {
    if redis_url("an_outage_longer_than_the_buffer_is_reported_not_hidden").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap();
    let Some(mut redis) = OwnRedis::start(port) else {
        skipped(
            "an_outage_longer_than_the_buffer_is_reported_not_hidden",
            "redis-server not on PATH",
        );
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
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
