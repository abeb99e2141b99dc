//! Network faults between a gateway node and Redis, with real processes: the gateway runs in its
//! own network namespace and reaches Redis through our fault proxy (`tests/src/fault_proxy.rs`,
//! delay and emulated loss) over a veth pair that the test takes down (a partition); its clients
//! reach it over a second veth pair that stays up. The engine runs on 127.0.0.1.
//!
//! Needs `REDIS_URL` (skipped without it, failed under `CI=true`, as every Redis-backed test) and
//! the right to make network namespaces (root or `CAP_NET_ADMIN`): where `ip netns add` is
//! refused the test says why on stderr and passes, also under `CI=true` (the one allowed skip).
//! The times it measures are printed (`--nocapture` shows them; docs/operations.md, "Faults: what
//! an operator sees", has them).

#[path = "../../../tests/src/fault_proxy.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite"
)]
mod fault_proxy;
#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite"
)]
mod http;
/// The skip rule of every Redis-backed test (`CI=true` makes a skip a failure).
#[path = "../../services/src/scale/needs_redis.rs"]
mod needs_redis;
#[path = "../../../tests/src/netns.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite"
)]
mod netns;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fault_proxy::{FaultProxy, Faults};
use futures_util::{SinkExt, StreamExt};
use needs_redis::redis_url_or_skip as redis_url;
use netns::Netns;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
/// Longest wait for anything expected (a hang guard, not a performance assertion).
const GUARD: Duration = Duration::from_secs(20);
/// Longest a readiness probe may take: it must answer at once whatever is down, never wait for
/// Redis.
const PROBE_BOUND: Duration = Duration::from_millis(500);
/// The bound on noticing a partition: `/readyz` answers 503 within a second of the cut.
const NOTICE_BOUND: Duration = Duration::from_secs(1);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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
    /// Every line the process wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
    _dir: PathBuf,
}

impl Node {
    /// Starts `command` (the binary, perhaps inside a namespace) as `role` on `prefix`.
    fn start(
        mut command: Command,
        role: &str,
        url: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let dir = std::env::temp_dir().join(unique(role));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = command
            .env("CRYPTOBOT__SERVER__PORT", "0")
            .env("CRYPTOBOT__SERVER__WORKERS", "1")
            .env("CRYPTOBOT__SERVER__ROLE", role)
            .env("CRYPTOBOT__BUS__BACKEND", "redis")
            .env("CRYPTOBOT__BUS__REDIS_URL", url)
            .env("CRYPTOBOT__BUS__REDIS_PREFIX", prefix)
            .env("CRYPTOBOT__STORAGE__PATH", dir.join("db.sqlite"))
            .env("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "10")
            .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
            .env("CRYPTOBOT__SERVER__REST_RATE_PER_IP", "0")
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
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.trim_end_matches(':').to_owned());
                    sent = true;
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(GUARD)
            .unwrap_or_else(|_| panic!("{role} reports its address: {:?}", log.lock().unwrap()))
            .parse()
            .expect("a socket address");
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Connects and reads the welcome; its epoch.
    async fn connect_held(&self) -> (Socket, u64) {
        let url = format!("ws://{}/api/v1/ws?welcome=1", self.addr);
        let (mut socket, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
            .await
            .expect("ws connects in time")
            .expect("ws connects");
        let welcome = next_of_type(&mut socket, "welcome").await;
        (socket, welcome["epoch"].as_u64().unwrap())
    }

    /// Waits until this node serves `epoch` (a gateway has caught up with Redis).
    async fn synced(&self, epoch: u64) {
        let deadline = Instant::now() + GUARD;
        loop {
            if self.connect_held().await.1 == epoch {
                return;
            }
            assert!(Instant::now() < deadline, "never followed epoch {epoch}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /readyz`, which must answer within [`PROBE_BOUND`] whatever is down.
    async fn readiness(&self) -> (u16, Value) {
        let response = tokio::time::timeout(
            PROBE_BOUND,
            http::request(self.addr, "GET", "/readyz", None, b""),
        )
        .await
        .expect("/readyz answers at once, without waiting for Redis");
        (response.status, response.json())
    }

    fn dump_log(&self, what: &str) {
        for line in self.log.lock().unwrap().iter() {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("{what}: {line}");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
    let wait = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.expect("frame") {
                let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                if value["type"] == kind {
                    return value;
                }
            }
        }
        panic!("socket closed before a {kind} frame");
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind} frame in time"))
}

/// The channels every recorded client subscribes to.
const CHANNELS: [&str; 4] = ["ticker:BTCUSDT", "trades", "portfolio", "alerts"];

/// A client that records every frame it receives, with the time, until stopped.
struct Recorder {
    frames: Arc<Mutex<Vec<(Instant, Value)>>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Recorder {
    async fn start(node: &Node) -> Self {
        let (mut socket, _) = node.connect_held().await;
        let subscribe = json!({"type": "subscribe", "id": 1, "payload": {"channels": CHANNELS}});
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .expect("send");
        next_of_type(&mut socket, "subscribed").await;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let (into, stopped) = (Arc::clone(&frames), stop.clone());
        // Ends with why the socket ended, if it did before the stop.
        let task = tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = stopped.cancelled() => return None,
                    frame = socket.next() => frame,
                };
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let value = serde_json::from_str(&text).expect("frames are JSON");
                        into.lock().unwrap().push((Instant::now(), value));
                    }
                    Some(Ok(Message::Close(close))) => return Some(format!("closed: {close:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Some(format!("failed: {err}")),
                    None => return Some("ended".to_owned()),
                }
            }
        });
        Self { frames, stop, task }
    }

    /// The trade ids received so far, in order.
    fn trade_ids(&self) -> Vec<u64> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, frame)| frame["type"] == "trade_notification")
            .filter_map(|(_, frame)| frame["payload"]["id"].as_u64())
            .collect()
    }

    /// Stops recording; every frame received, and why the socket ended early (if it did).
    async fn finish(self) -> (Vec<(Instant, Value)>, Option<String>) {
        self.stop.cancel();
        let ended = tokio::time::timeout(GUARD, self.task)
            .await
            .expect("the recorder stops")
            .expect("the recorder did not panic");
        let frames = std::mem::take(&mut *self.frames.lock().unwrap());
        (frames, ended)
    }
}

/// The `seq`s of `channel`'s live events in arrival order (snapshots repeat a `seq` and are left
/// out, as a client does).
fn live_seqs(frames: &[(Instant, Value)], channel: &str) -> Vec<u64> {
    frames
        .iter()
        .map(|(_, frame)| frame)
        .filter(|frame| frame["channel"] == channel && frame["snapshot"] != true)
        .filter_map(|frame| frame["seq"].as_u64())
        .collect()
}

/// The node's own broker alerts (`feed_stalled`, `feed_resumed`) with their arrival times.
fn broker_alerts(frames: &[(Instant, Value)]) -> Vec<(Instant, String)> {
    frames
        .iter()
        .filter(|(_, frame)| frame["type"] == "alert")
        .filter_map(|(at, frame)| {
            let kind = frame["payload"]["alert_type"].as_str()?;
            kind.starts_with("feed_").then(|| (*at, kind.to_owned()))
        })
        .collect()
}

/// Posts trades to the engine every 150 ms until stopped; the acknowledged trade ids in order.
fn trader(
    engine: SocketAddr,
    prefix: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..1_000 {
            let body = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "10",
                "client_order_id": format!("{prefix}-{n}")});
            let response = http::request(
                engine,
                "POST",
                "/api/v1/trades",
                Some("application/json"),
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(response.status, 201, "{}", response.body);
            acked.push(response.json()["trade"]["id"].as_u64().unwrap());
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(150)) => {}
            }
        }
        acked
    })
}

/// The address `redis://host:port` of `url` points at.
fn redis_addr(url: &str) -> SocketAddr {
    let rest = url.trim_start_matches("redis://");
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:6379")
    };
    with_port
        .to_socket_addrs()
        .expect("REDIS_URL resolves")
        .next()
        .expect("REDIS_URL has an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_redis_says_so_at_once_and_afterwards_misses_nothing() {
    let test = "a_gateway_cut_off_from_redis_says_so_at_once_and_afterwards_misses_nothing";
    let Some(url) = redis_url(test) else {
        return;
    };
    let netns = match Netns::create(0) {
        Ok(netns) => netns,
        Err(why) => {
            // The one skip allowed under CI too: this machine refuses network namespaces.
            eprintln!("{test}: skipped: cannot make a network namespace: {why}");
            return;
        }
    };
    let prefix = unique("faults");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    // The gateway's only way to Redis: the proxy on the host end of the `redis` veth.
    let proxy = FaultProxy::start(
        SocketAddr::from((netns.redis.host_addr, 0)),
        redis_addr(&url),
        0x5EED,
    )
    .await
    .expect("the proxy listens on the host end of the veth");
    let faults = proxy.handle();
    let engine = Node::start(Command::new(BIN), "engine", &url, &prefix, &[]);
    let proxied = format!("redis://{}", proxy.addr());
    let clients_addr = netns.clients.ns_addr.to_string();
    let gateway = Node::start(
        netns.command(BIN),
        "gateway",
        &proxied,
        &prefix,
        &[
            ("CRYPTOBOT__SERVER__HOST", clients_addr.as_str()),
            // A private address of this machine: nothing leaves it.
            ("CRYPTOBOT__AUTH__ALLOW_INSECURE", "true"),
        ],
    );
    let (_, epoch) = engine.connect_held().await;
    gateway.synced(epoch).await;
    let (status, ready) = gateway.readiness().await;
    assert_eq!(status, 200, "{ready}");

    // Three clients on the gateway, and one on the engine to compare with.
    let mut on_gateway = Vec::new();
    for _ in 0..3 {
        on_gateway.push(Recorder::start(&gateway).await);
    }
    let on_engine = Recorder::start(&engine).await;
    let stop_trading = tokio_util::sync::CancellationToken::new();
    let trading = trader(engine.addr, prefix.clone(), stop_trading.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 1: 200 ms one-way delay and 5 % loss, for 20 s.
    let lossy_from = Instant::now();
    let before_lossy = on_gateway[0].trade_ids().len();
    faults.set(Faults::lossy(Duration::from_millis(200), 0.05));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let delivered_while_lossy = on_gateway[0].trade_ids().len() - before_lossy;
    // Delivery goes on over the bad link (the full check of order and gaps comes at the end).
    assert!(
        delivered_while_lossy > 0,
        "nothing delivered in 20 s of delay and loss"
    );

    // The link is clean again (also for the heal), and the node over a stall the loss may have
    // caused, so the partition's notice is timed from a healthy node.
    faults.set(Faults::NONE);
    let settled = Instant::now();
    loop {
        let (status, _) = gateway.readiness().await;
        if status == 200 {
            break;
        }
        assert!(settled.elapsed() < GUARD, "not ready again on a clean link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 2: the partition.
    netns.set_redis_link(false).expect("the veth goes down");
    let cut = Instant::now();
    let mut not_ready = None;
    while cut.elapsed() < Duration::from_secs(10) {
        let (status, body) = gateway.readiness().await;
        if status == 503 {
            assert_eq!(body["status"], "not_ready", "{body}");
            assert_eq!(body["checks"]["broker"], "disconnected", "{body}");
            not_ready.get_or_insert_with(|| cut.elapsed());
        } else {
            assert!(
                not_ready.is_none(),
                "ready again while still cut off: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let time_to_503 = not_ready.expect("503 while cut off");

    // Phase 3: heal.
    netns.set_redis_link(true).expect("the veth comes up");
    let healed = Instant::now();
    let time_to_ready = loop {
        let (status, _) = gateway.readiness().await;
        if status == 200 {
            break healed.elapsed();
        }
        assert!(healed.elapsed() < GUARD, "not ready again after the heal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_trading.cancel();
    let acked = tokio::time::timeout(GUARD, trading)
        .await
        .expect("the trader stops")
        .expect("every trade acknowledged");
    // Everything acknowledged reaches every client (a hang guard, then the real checks).
    let deadline = Instant::now() + GUARD;
    while on_gateway
        .iter()
        .chain([&on_engine])
        .any(|client| client.trade_ids().len() < acked.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (engine_frames, engine_ended) = on_engine.finish().await;
    assert_eq!(engine_ended, None, "the engine's client stays connected");
    let engine_trades = live_seqs(&engine_frames, "trades");
    let engine_portfolio = live_seqs(&engine_frames, "portfolio");

    let mut stalls_while_lossy = 0;
    let mut told_after = Vec::new();
    for (n, client) in on_gateway.into_iter().enumerate() {
        let (frames, ended) = client.finish().await;
        if ended.is_some() {
            gateway.dump_log("gateway");
        }
        // TC0: the client stayed connected through delay, loss, the partition and the heal.
        assert_eq!(ended, None, "client {n}");
        // TC1: every trade, once, in order, with the engine's seq: none missed or doubled.
        let ids: Vec<u64> = frames
            .iter()
            .filter(|(_, frame)| frame["type"] == "trade_notification")
            .filter_map(|(_, frame)| frame["payload"]["id"].as_u64())
            .collect();
        assert_eq!(ids, acked, "client {n}: every acknowledged trade, in order");
        let trades = live_seqs(&frames, "trades");
        assert!(
            trades.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "client {n}: trades {trades:?}"
        );
        assert_eq!(trades, engine_trades, "client {n}: the engine's seqs");
        // TC2: every portfolio change too, consecutive, as the engine's clients got them.
        let portfolio = live_seqs(&frames, "portfolio");
        assert!(
            portfolio.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "client {n}: portfolio {portfolio:?}"
        );
        assert_eq!(portfolio, engine_portfolio, "client {n}");
        // The engine's own alerts (sequenced) are consecutive; the node's are snapshots.
        let alerts = live_seqs(&frames, "alerts");
        assert!(
            alerts.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "client {n}: alerts {alerts:?}"
        );
        // TC3: tickers may be conflated (docs/operations.md): never one twice or out of order.
        let tickers = live_seqs(&frames, "ticker:BTCUSDT");
        assert!(
            tickers.windows(2).all(|pair| pair[1] > pair[0]),
            "client {n}: tickers {tickers:?}"
        );
        // TC4: told of the partition (feed_stalled after the cut), and of the end of it.
        let alerts = broker_alerts(&frames);
        stalls_while_lossy = stalls_while_lossy.max(
            alerts
                .iter()
                .filter(|(at, kind)| *at >= lossy_from && *at < cut && kind == "feed_stalled")
                .count(),
        );
        let stalled = alerts
            .iter()
            .find(|(at, kind)| *at >= cut && kind == "feed_stalled")
            .map(|(at, _)| at.duration_since(cut));
        let stalled = stalled.unwrap_or_else(|| panic!("client {n} told of the cut: {alerts:?}"));
        assert!(
            alerts
                .iter()
                .any(|(at, kind)| *at >= healed && kind == "feed_resumed"),
            "client {n} told of the heal: {alerts:?}"
        );
        told_after.push(stalled);
    }
    let told = told_after.iter().max().copied().unwrap_or_default();
    eprintln!(
        "faults: {} trades; {delivered_while_lossy} delivered during 20 s of 200 ms delay with 5 % loss, \
         with {stalls_while_lossy} feed_stalled blips meanwhile; after the cut /readyz 503 in {} ms and \
         clients told in {} ms; after the heal /readyz 200 in {} ms",
        acked.len(),
        time_to_503.as_millis(),
        told.as_millis(),
        time_to_ready.as_millis(),
    );
    // TC5: noticed within a second of the cut (the bound; bus.read_timeout_ms is 750).
    assert!(time_to_503 <= NOTICE_BOUND, "503 after {time_to_503:?}");
}
