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
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared by the process tests, each uses part of it"
)]
mod support;

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
use support::{Keys, say, unique};
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

/// A gateway in its own namespace `n`, reaching Redis (`url`) only through a fault proxy on the
/// host end of its `redis` veth, serving its clients on its `clients` veth.
struct CutOff {
    gateway: Node,
    proxy: FaultProxy,
    /// Last: deleting the namespace kills whatever still runs in it.
    netns: Netns,
}

impl CutOff {
    /// `None` (after saying why) where network namespaces are refused.
    async fn start(n: u32, url: &str, prefix: &str, extra: &[(&str, &str)]) -> Option<Self> {
        let netns = match Netns::create(n) {
            Ok(netns) => netns,
            Err(why) => {
                say(format_args!(
                    "{TEST}: skipped: cannot make a network namespace: {why}"
                ));
                return None;
            }
        };
        let proxy = FaultProxy::start(
            SocketAddr::from((netns.redis.host_addr, 0)),
            redis_addr(url),
            0x5EED + u64::from(n),
        )
        .await
        .expect("the proxy listens on the host end of the veth");
        let proxied = format!("redis://{}", proxy.addr());
        let clients_addr = netns.clients.ns_addr.to_string();
        let mut env = vec![
            ("CRYPTOBOT__SERVER__HOST", clients_addr.as_str()),
            // A private address of this machine: nothing leaves it.
            ("CRYPTOBOT__AUTH__ALLOW_INSECURE", "true"),
        ];
        env.extend_from_slice(extra);
        let gateway = Node::start(netns.command(BIN), "gateway", &proxied, prefix, &env);
        Some(Self {
            gateway,
            proxy,
            netns,
        })
    }

    async fn ready(&self) -> bool {
        self.gateway.readiness().await.0 == 200
    }
}

/// What every gateway client must have got: the trades the engine acknowledged, and the `seq`s
/// the engine's own client got; the phases' start times.
struct Expected<'a> {
    acked: &'a [u64],
    trades: &'a [u64],
    portfolio: &'a [u64],
    lossy_from: Instant,
    cut: Instant,
    healed: Instant,
}

/// Checks what one gateway client got: every trade and portfolio change once, in order, with the
/// engine's `seq`; tickers in order (conflated: gaps allowed); told of the cut and of the heal.
/// Returns how many `feed_stalled` it got during the loss, and how soon after the cut it was told.
fn check_client(
    name: &str,
    frames: &[(Instant, Value)],
    expected: &Expected<'_>,
) -> (usize, Duration) {
    let consecutive = |seqs: &[u64]| seqs.windows(2).all(|pair| pair[1] == pair[0] + 1);
    // TC1: every trade, once, in order, with the engine's seq: none missed or doubled.
    let ids: Vec<u64> = frames
        .iter()
        .filter(|(_, frame)| frame["type"] == "trade_notification")
        .filter_map(|(_, frame)| frame["payload"]["id"].as_u64())
        .collect();
    assert_eq!(
        ids, expected.acked,
        "{name}: every acknowledged trade, in order"
    );
    let trades = live_seqs(frames, "trades");
    assert!(consecutive(&trades), "{name}: trades {trades:?}");
    assert_eq!(trades, expected.trades, "{name}: the engine's seqs");
    // TC2: every portfolio change too, consecutive, as the engine's clients got them.
    let portfolio = live_seqs(frames, "portfolio");
    assert!(consecutive(&portfolio), "{name}: portfolio {portfolio:?}");
    assert_eq!(portfolio, expected.portfolio, "{name}");
    // The engine's own alerts (sequenced) are consecutive; the node's are snapshots.
    let alerts = live_seqs(frames, "alerts");
    assert!(consecutive(&alerts), "{name}: alerts {alerts:?}");
    // TC3: tickers may be conflated (docs/operations.md): never one twice or out of order.
    let tickers = live_seqs(frames, "ticker:BTCUSDT");
    assert!(
        tickers.windows(2).all(|pair| pair[1] > pair[0]),
        "{name}: tickers {tickers:?}"
    );
    // TC4: told of the partition (feed_stalled after the cut), and of its end.
    let alerts = broker_alerts(frames);
    let stalls = alerts
        .iter()
        .filter(|(at, kind)| {
            *at >= expected.lossy_from && *at < expected.cut && kind == "feed_stalled"
        })
        .count();
    let told = alerts
        .iter()
        .find(|(at, kind)| *at >= expected.cut && *at < expected.healed && kind == "feed_stalled")
        .map(|(at, _)| at.duration_since(expected.cut))
        .unwrap_or_else(|| panic!("{name} told of the cut: {alerts:?}"));
    assert!(
        alerts
            .iter()
            .any(|(at, kind)| *at >= expected.healed && kind == "feed_resumed"),
        "{name} told of the heal: {alerts:?}"
    );
    (stalls, told)
}

const TEST: &str = "a_gateway_cut_off_from_redis_says_so_at_once_and_afterwards_misses_nothing";

/// The read timeout of the second, patient gateway: far above the lossy link's worst round trip,
/// and far below the partition.
const PATIENT_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_redis_says_so_at_once_and_afterwards_misses_nothing() {
    let Some(url) = redis_url(TEST) else {
        return;
    };
    let prefix = unique("faults");
    let _keys = Keys {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    // Two gateways, each in its own namespace behind its own proxy: one on the default
    // `bus.read_timeout_ms` (750), one patient (5000), to see what the setting trades.
    let Some(quick) = CutOff::start(0, &url, &prefix, &[]).await else {
        return;
    };
    let patient_ms = PATIENT_READ_TIMEOUT.as_millis().to_string();
    let Some(patient) = CutOff::start(
        1,
        &url,
        &prefix,
        &[("CRYPTOBOT__BUS__READ_TIMEOUT_MS", patient_ms.as_str())],
    )
    .await
    else {
        return;
    };
    let engine = Node::start(Command::new(BIN), "engine", &url, &prefix, &[]);
    let (_, epoch) = engine.connect_held().await;
    for cut_off in [&quick, &patient] {
        cut_off.gateway.synced(epoch).await;
        let (status, ready) = cut_off.gateway.readiness().await;
        assert_eq!(status, 200, "{ready}");
    }

    // Three clients on the quick gateway, one on the patient one, and one on the engine to
    // compare with.
    let mut on_quick = Vec::new();
    for _ in 0..3 {
        on_quick.push(Recorder::start(&quick.gateway).await);
    }
    let on_patient = Recorder::start(&patient.gateway).await;
    let on_engine = Recorder::start(&engine).await;
    let stop_trading = tokio_util::sync::CancellationToken::new();
    let trading = trader(engine.addr, prefix.clone(), stop_trading.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 1: 200 ms delay each way (400 ms more per round trip) and 5 % loss, for 20 s.
    let lossy_from = Instant::now();
    let before_lossy = on_quick[0].trade_ids().len();
    for cut_off in [&quick, &patient] {
        cut_off
            .proxy
            .handle()
            .set(Faults::lossy(Duration::from_millis(200), 0.05));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let delivered_while_lossy = on_quick[0].trade_ids().len() - before_lossy;
    // Delivery goes on over the bad link (the full check of order and gaps comes at the end).
    assert!(
        delivered_while_lossy > 0,
        "nothing delivered in 20 s of delay and loss"
    );

    // The links are clean again (also for the heal), and the nodes over any stall the loss
    // caused, so the partition's notice is timed from healthy nodes.
    for cut_off in [&quick, &patient] {
        cut_off.proxy.handle().set(Faults::NONE);
    }
    let settled = Instant::now();
    while !(quick.ready().await && patient.ready().await) {
        assert!(settled.elapsed() < GUARD, "not ready again on a clean link");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 2: the partition of both, for 10 s.
    for cut_off in [&quick, &patient] {
        cut_off
            .netns
            .set_redis_link(false)
            .expect("the veth goes down");
    }
    let cut = Instant::now();
    let mut not_ready = [None, None];
    while cut.elapsed() < Duration::from_secs(10) {
        for (seen, cut_off) in not_ready.iter_mut().zip([&quick, &patient]) {
            let (status, body) = cut_off.gateway.readiness().await;
            if status == 503 {
                assert_eq!(body["status"], "not_ready", "{body}");
                assert_eq!(body["checks"]["broker"], "disconnected", "{body}");
                assert_eq!(
                    body["checks"]["engine"], "unreachable: broker disconnected",
                    "{body}"
                );
                seen.get_or_insert_with(|| cut.elapsed());
            } else {
                assert!(seen.is_none(), "ready again while still cut off: {body}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let [Some(quick_503), Some(patient_503)] = not_ready else {
        panic!("503 while cut off: {not_ready:?}");
    };

    // Phase 3: heal.
    for cut_off in [&quick, &patient] {
        cut_off
            .netns
            .set_redis_link(true)
            .expect("the veth comes up");
    }
    let healed = Instant::now();
    let mut ready_again = [None, None];
    while ready_again.iter().any(Option::is_none) {
        for (seen, cut_off) in ready_again.iter_mut().zip([&quick, &patient]) {
            if seen.is_none() && cut_off.ready().await {
                *seen = Some(healed.elapsed());
            }
        }
        assert!(healed.elapsed() < GUARD, "not ready again after the heal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let [Some(quick_ready), Some(patient_ready)] = ready_again else {
        unreachable!("the loop ends when both are ready");
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_trading.cancel();
    let acked = tokio::time::timeout(GUARD, trading)
        .await
        .expect("the trader stops")
        .expect("every trade acknowledged");
    // Everything acknowledged reaches every client (a hang guard, then the real checks).
    let deadline = Instant::now() + GUARD;
    while on_quick
        .iter()
        .chain([&on_patient, &on_engine])
        .any(|client| client.trade_ids().len() < acked.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (engine_frames, engine_ended) = on_engine.finish().await;
    assert_eq!(engine_ended, None, "the engine's client stays connected");
    let expected = Expected {
        acked: &acked,
        trades: &live_seqs(&engine_frames, "trades"),
        portfolio: &live_seqs(&engine_frames, "portfolio"),
        lossy_from,
        cut,
        healed,
    };

    let (mut quick_stalls, mut quick_told) = (0, Duration::ZERO);
    for (n, client) in on_quick.into_iter().enumerate() {
        let (frames, ended) = client.finish().await;
        if ended.is_some() {
            quick.gateway.dump_log("gateway");
        }
        // TC0: the client stayed connected through delay, loss, the partition and the heal.
        assert_eq!(ended, None, "client {n}");
        let (stalls, told) = check_client(&format!("client {n}"), &frames, &expected);
        quick_stalls = quick_stalls.max(stalls);
        quick_told = quick_told.max(told);
    }
    let (frames, ended) = on_patient.finish().await;
    assert_eq!(ended, None, "the patient gateway's client");
    let (patient_stalls, patient_told) =
        check_client("the patient gateway's client", &frames, &expected);
    say(format_args!(
        "faults: {} trades; {delivered_while_lossy} delivered during 20 s of 200 ms delay each way \
         with 5 % loss. bus.read_timeout_ms = 750: {quick_stalls} feed_stalled blips during the \
         loss; after the cut /readyz 503 in {} ms, clients told in {} ms; after the heal /readyz \
         200 in {} ms. bus.read_timeout_ms = {patient_ms}: {patient_stalls} blips; 503 in {} ms, \
         told in {} ms; 200 in {} ms",
        acked.len(),
        quick_503.as_millis(),
        quick_told.as_millis(),
        quick_ready.as_millis(),
        patient_503.as_millis(),
        patient_told.as_millis(),
        patient_ready.as_millis(),
    ));
    // TC5: noticed within a second of the cut (the bound) with the default timeout...
    assert!(quick_503 <= NOTICE_BOUND, "503 after {quick_503:?}");
    // ...and not before its own timeout with a longer one: it waited for the answer of the poll
    // under way at the cut, sent at most one idle poll (250 ms) and a round trip before it.
    assert!(
        patient_503 >= PATIENT_READ_TIMEOUT - Duration::from_millis(500),
        "503 after {patient_503:?}"
    );
    // TC6: the patient gateway rode out the lossy link without a stall.
    assert_eq!(
        patient_stalls, 0,
        "a 5 s timeout is far above the lossy round trip"
    );
}
