//! `cryptobot-client` against the real `cryptobot` binary: trades exactly once and in order
//! across `kill -9` restarts and dropped or silent TCP connections, commands with typed errors,
//! and tokens. The client reaches the server through a loopback TCP proxy the tests cut.

#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptobot_client::{
    Client, ClientConfig, ClientError, ErrorCode, NewOrder, TokenPlacement, TradeRequest, Update,
};
use cryptobot_domain::{
    Channel, Event, LevelChange, OrderQuery, OrderRef, OrderRequest, OrderStatus, Side,
    StatusFilter, Symbol, TimeInForce,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
const READER: &str = "reader-token-0123456789";
const TRADER: &str = "trader-token-0123456789";

fn temp_db(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cryptobot-client-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("db.sqlite")
}

/// A started server process and the address it reported.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the binary on port 0 with `db` (and `extra` settings), waits for "listening on".
    fn start(db: &Path, extra: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .env("CRYPTOBOT__SERVER__PORT", "0")
            .env("CRYPTOBOT__SERVER__WORKERS", "1")
            .env("CRYPTOBOT__STORAGE__PATH", db)
            .env("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "20")
            .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
            .env("CRYPTOBOT__SERVER__REST_RATE_PER_IP", "0")
            .env("CRYPTOBOT__WS__CONNECT_RATE_PER_IP", "0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server reports its address within 20 s")
            .parse()
            .expect("a socket address");
        Self { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Forward,
    /// Keep the sockets open and forward nothing (a half-open link: only timeouts notice).
    Freeze,
}

/// A loopback TCP proxy in front of the server: new connections go to the current upstream;
/// `cut` drops every connection it carries, `freeze` stops forwarding on them.
struct Proxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    /// Bumped to cut; carried connections end when it changes.
    generation: watch::Sender<(u64, Mode)>,
    /// While set, new connections are dropped at once (the server looks down).
    blocked: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let (generation, _) = watch::channel((0, Mode::Forward));
        let target = Arc::clone(&upstream);
        let watcher = generation.clone();
        let blocked = Arc::new(AtomicBool::new(false));
        let refusing = Arc::clone(&blocked);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refusing.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let to = *target.lock().unwrap();
                let mut changes = watcher.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let started = changes.borrow_and_update().0;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = changes.wait_for(|(generation, _)| *generation != started) => {}
                    }
                    if changes.borrow().1 == Mode::Freeze {
                        // Hold both sockets, silent, until the next generation.
                        let frozen = changes.borrow().0;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(60),
                            changes.wait_for(|(generation, _)| *generation != frozen),
                        )
                        .await;
                    }
                });
            }
        });
        Self {
            addr,
            upstream,
            generation,
            blocked,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.addr)
    }

    fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = addr;
    }

    fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    fn cut(&self, mode: Mode) {
        self.generation.send_modify(|(generation, current)| {
            *generation += 1;
            *current = mode;
        });
    }
}

async fn wait_for_price(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let auth = [("Authorization", "Bearer reader-token-0123456789")];
    while http::request_with_headers(addr, "GET", "/api/v1/tickers/BTCUSDT", &auth, None, b"")
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "no BTCUSDT price within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every trade id in the database, oldest first, over the REST paging.
async fn all_trade_ids(addr: SocketAddr) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut path = "/api/v1/trades?after_id=0&limit=1000".to_owned();
    for _ in 0..100 {
        let response = http::request(addr, "GET", &path, None, b"").await;
        assert_eq!(response.status, 200, "{}", response.body);
        ids.extend(
            response
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap()),
        );
        match response.header("link") {
            Some(link) => {
                path = link
                    .split('>')
                    .next()
                    .unwrap()
                    .trim_start_matches('<')
                    .to_owned()
            }
            None => return ids,
        }
    }
    panic!("more than 100 pages");
}

async fn post_trade(addr: SocketAddr, body: &Value) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.to_string();
        let head = format!(
            "POST /api/v1/trades HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await?;
        let mut raw = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Makes trades straight at the server (not through the proxy) until stopped, surviving the
/// server's deaths: buys and smaller sells alternate so cash and position never run out.
fn start_trader(
    server: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let addr = *server.lock().unwrap();
            let body = if n.is_multiple_of(2) {
                json!({"symbol": "BTCUSDT", "side": "buy", "amount": "40"})
            } else {
                json!({"symbol": "BTCUSDT", "side": "sell", "amount": "20"})
            };
            if matches!(post_trade(addr, &body).await, Some(201)) {
                n += 1;
                made.fetch_add(1, Ordering::Relaxed);
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

/// What the test's consumer saw.
#[derive(Debug, Default)]
struct Seen {
    trade_ids: Vec<u64>,
    connected: usize,
    trades_recovered: usize,
    refilled: usize,
}

/// Reads the client's updates into `seen` until they end.
fn start_consumer(
    mut updates: cryptobot_client::Updates,
    seen: Arc<Mutex<Seen>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            let mut seen = seen.lock().unwrap();
            match update {
                Update::Event(received) => {
                    if let Event::TradeExecuted(trade) = received.event {
                        assert_eq!(received.channel, Channel::Trades);
                        if received.seq.is_none() {
                            seen.refilled += 1;
                        }
                        seen.trade_ids.push(trade.id);
                    }
                }
                Update::Connected { recovered, .. } => {
                    seen.connected += 1;
                    if recovered.get(&Channel::Trades) == Some(&true) {
                        seen.trades_recovered += 1;
                    }
                }
                Update::Disconnected { .. } | Update::OpenOrders { .. } => {}
                Update::Stopped(err) => panic!("client stopped: {err}"),
            }
        }
    })
}

async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast_client(url: String) -> ClientConfig {
    ClientConfig::new(url)
        .channels([Channel::Trades])
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
        .request_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_arrive_once_and_in_order_across_kill_9_and_dropped_connections() {
    let db = temp_db("killed");
    let server = Server::start(&db, &[]);
    wait_for_price(server.addr).await;
    // Trades from before the client: not delivered (the stream starts at the newest trade).
    for _ in 0..3 {
        let buy = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "40"});
        assert_eq!(post_trade(server.addr, &buy).await, Some(201));
    }
    let proxy = Proxy::start(server.addr).await;
    let (client, updates) = Client::connect(fast_client(proxy.ws_url())).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let consumer = start_consumer(updates, Arc::clone(&seen));

    let current = Arc::new(Mutex::new(server.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let trader = start_trader(Arc::clone(&current), Arc::clone(&stop), Arc::clone(&made));
    let mut server = Some(server);
    let mut target = 0;
    for step in ["cut", "kill", "cut", "kill", "cut"] {
        target += 25;
        let made_now = Arc::clone(&made);
        wait_until(Duration::from_secs(30), "25 more trades", || {
            made_now.load(Ordering::Relaxed) >= target
        })
        .await;
        // The client stays away while more trades are made: they can only reach it through
        // the resume (a cut: same epoch, replayed from the history) or the REST refill (a kill:
        // a new epoch).
        proxy.block(true);
        if step == "cut" {
            proxy.cut(Mode::Forward);
        } else {
            server.take().unwrap().kill9();
            let restarted = Server::start(&db, &[]);
            proxy.set_upstream(restarted.addr);
            *current.lock().unwrap() = restarted.addr;
            server = Some(restarted);
        }
        target += 10;
        let made_now = Arc::clone(&made);
        wait_until(Duration::from_secs(30), "trades while away", || {
            made_now.load(Ordering::Relaxed) >= target
        })
        .await;
        proxy.block(false);
    }
    target += 25;
    let made_now = Arc::clone(&made);
    wait_until(Duration::from_secs(30), "the last trades", || {
        made_now.load(Ordering::Relaxed) >= target
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    trader.await.unwrap();

    let addr = server.as_ref().unwrap().addr;
    let expected: Vec<u64> = all_trade_ids(addr)
        .await
        .into_iter()
        .filter(|id| *id > 3)
        .collect();
    assert!(expected.len() >= 200, "{} trades", expected.len());
    let last = *expected.last().unwrap();
    let watched = Arc::clone(&seen);
    wait_until(
        Duration::from_secs(20),
        "the client to see the last trade",
        || watched.lock().unwrap().trade_ids.last() == Some(&last),
    )
    .await;
    client.close().await;
    consumer.await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.trade_ids, expected, "every trade once, in order");
    // Both repair paths ran: a resume the server replayed (the cuts, same epoch) and a REST
    // refill (the kills, a new epoch).
    assert!(seen.connected >= 6, "{seen:?}");
    assert!(seen.trades_recovered >= 3, "{seen:?}");
    assert!(seen.refilled >= 20, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced_after_the_idle_timeout() {
    let db = temp_db("silent");
    let server = Server::start(
        &db,
        &[
            ("CRYPTOBOT__WS__HEARTBEAT_INTERVAL_SECS", "1"),
            ("CRYPTOBOT__WS__CLIENT_TIMEOUT_SECS", "3"),
        ],
    );
    wait_for_price(server.addr).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, updates) = Client::connect(fast_client(proxy.ws_url())).await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let consumer = start_consumer(updates, Arc::clone(&seen));
    // Kept alive by the server's pings alone: nothing replaced in 4 s, more than the timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(seen.lock().unwrap().connected, 1);
    // The link goes silent (no FIN, no RST): only the idle timeout can notice.
    proxy.cut(Mode::Freeze);
    let frozen_at = Instant::now();
    let buy = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "40"});
    assert_eq!(post_trade(server.addr, &buy).await, Some(201));
    let watched = Arc::clone(&seen);
    wait_until(Duration::from_secs(10), "a new connection", || {
        watched.lock().unwrap().connected == 2
    })
    .await;
    // The idle timeout (3 s) runs from the last ping heard (one a second): at least 2 s after the
    // freeze, where a closed socket would have been noticed at once.
    assert!(
        frozen_at.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        frozen_at.elapsed()
    );
    let watched = Arc::clone(&seen);
    wait_until(
        Duration::from_secs(5),
        "the trade made while silent",
        || watched.lock().unwrap().trade_ids == [1],
    )
    .await;
    client.close().await;
    consumer.await.unwrap();
    proxy.cut(Mode::Forward);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_with_typed_results_and_survive_a_dropped_connection() {
    let db = temp_db("commands");
    let server = Server::start(&db, &[]);
    wait_for_price(server.addr).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, mut updates) = Client::connect(fast_client(proxy.ws_url())).await.unwrap();
    let btc = Symbol::parse("BTCUSDT").unwrap();

    // TC0: a trade, and the same TradeRequest again is replayed, not executed twice.
    let order = TradeRequest::buy_amount(btc.clone(), "100".parse().unwrap());
    let first = client.manual_trade(&order).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(
        first.trade.client_order_id.as_ref(),
        Some(&order.client_order_id)
    );
    let again = client.manual_trade(&order).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.trade.id, first.trade.id);
    // Its notification comes on trades, once.
    let received = tokio::time::timeout(Duration::from_secs(5), updates.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&received.event, Event::TradeExecuted(trade) if trade.id == first.trade.id));

    // TC1: typed refusals.
    let too_big = TradeRequest::buy_amount(btc.clone(), "100000000".parse().unwrap());
    let err = client.manual_trade(&too_big).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InsufficientFunds), "{err}");
    let unknown =
        TradeRequest::buy_amount(Symbol::parse("DOGEUSDT").unwrap(), "10".parse().unwrap());
    assert_eq!(
        client.manual_trade(&unknown).await.unwrap_err().code(),
        Some(&ErrorCode::UnknownSymbol)
    );
    let eth = Symbol::parse("ETHUSDT").unwrap();
    let err = client
        .update_position(
            &eth,
            LevelChange::Set("1".parse().unwrap()),
            LevelChange::Keep,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::NoPosition), "{err}");
    let position = client
        .update_position(
            &btc,
            LevelChange::Set("1000".parse().unwrap()),
            LevelChange::Clear,
        )
        .await
        .unwrap();
    assert_eq!(position.stop_loss, Some("1000".parse().unwrap()));
    assert_eq!(position.take_profit, None);
    let err = client
        .subscribe([Channel::parse("ticker:DOGEUSDT").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnknownSymbol));

    // TC2: subscribe and unsubscribe change what is delivered.
    let ticker = Channel::parse("ticker:ETHUSDT").unwrap();
    let active = client.subscribe([ticker.clone()]).await.unwrap();
    assert!(active.contains(&ticker), "{active:?}");
    let received = tokio::time::timeout(Duration::from_secs(5), updates.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&received.event, Event::Ticker(t) if t.symbol == eth),
        "{received:?}"
    );
    let active = client.unsubscribe([ticker.clone()]).await.unwrap();
    assert!(!active.contains(&ticker), "{active:?}");

    // TC3: a command sent while the link is down is sent again on the next connection, once.
    proxy.cut(Mode::Forward);
    let during = TradeRequest::buy_amount(btc.clone(), "50".parse().unwrap());
    let done = client.manual_trade(&during).await.unwrap();
    assert!(!done.replayed);
    let path = format!(
        "/api/v1/trades?client_order_id={}",
        during.client_order_id.as_str()
    );
    let stored = http::request(server.addr, "GET", &path, None, b"")
        .await
        .json();
    assert_eq!(stored.as_array().unwrap().len(), 1, "{stored}");
    client.close().await;
    // After close: commands fail at once, typed.
    assert_eq!(
        client.manual_trade(&during).await.unwrap_err(),
        ClientError::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_in_the_header_or_the_sub_protocol_and_their_refusals() {
    let tokens = json!([
        {"name": "reader", "token": READER, "scopes": ["read"]},
        {"name": "trader", "token": TRADER, "scopes": ["read", "trade"]},
    ])
    .to_string();
    let db = temp_db("tokens");
    let server = Server::start(
        &db,
        &[
            ("CRYPTOBOT__AUTH__MODE", "token"),
            ("CRYPTOBOT__AUTH__TOKENS", &tokens),
        ],
    );
    wait_for_price(server.addr).await;
    let url = format!("ws://{}/api/v1/ws", server.addr);
    // TC0: no token, a wrong one: 401 with the stable code, fatal.
    for config in [
        ClientConfig::new(&url),
        ClientConfig::new(&url).token("wrong-token-0123456789"),
    ] {
        let err = Client::connect(config).await.unwrap_err();
        assert_eq!(err.code(), Some(&ErrorCode::Unauthorized), "{err}");
        assert!(err.is_fatal());
    }
    // TC1: a reader connects (in the sub-protocol) but may not trade.
    let config = ClientConfig::new(&url)
        .token(READER)
        .token_placement(TokenPlacement::SubProtocol);
    let (reader, _updates) = Client::connect(config).await.unwrap();
    let order = TradeRequest::buy_amount(Symbol::parse("BTCUSDT").unwrap(), "100".parse().unwrap());
    assert_eq!(
        reader.manual_trade(&order).await.unwrap_err().code(),
        Some(&ErrorCode::Forbidden)
    );
    // TC2: a trader (in the header) trades, and the REST refill uses the token too.
    let (trader, mut updates) =
        Client::connect(ClientConfig::new(&url).token(TRADER).trades_after(0))
            .await
            .unwrap();
    let done = trader.manual_trade(&order).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), updates.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&received.event, Event::TradeExecuted(trade) if trade.id == done.trade.id));
    reader.close().await;
    trader.close().await;
}

/// The next update `pick` maps to something, within 5 s; others are skipped.
async fn next_matching<T>(
    updates: &mut cryptobot_client::Updates,
    mut pick: impl FnMut(Update) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = tokio::time::timeout(left, updates.recv())
            .await
            .expect("the update within 5 s")
            .expect("the client runs");
        if let Some(found) = pick(update) {
            return found;
        }
    }
}

/// The `order_update` of `id` with event `kind`.
fn order_event(
    id: u64,
    kind: OrderStatus,
) -> impl FnMut(Update) -> Option<cryptobot_domain::Order> {
    move |update| match update {
        Update::Event(received) => match received.event {
            Event::OrderUpdated(update) if update.order.id == id && update.event == kind => {
                Some(update.order)
            }
            _ => None,
        },
        _ => None,
    }
}

fn open_orders(update: Update) -> Option<(Option<u64>, Vec<cryptobot_domain::Order>)> {
    match update {
        Update::OpenOrders { seq, orders } => Some((seq, orders)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_rest_fill_cancel_and_replay_with_typed_results_across_a_restart() {
    let db = temp_db("orders");
    let server = Server::start(&db, &[]);
    wait_for_price(server.addr).await;
    let proxy = Proxy::start(server.addr).await;
    let config = fast_client(proxy.ws_url()).channels([Channel::Orders]);
    let (client, mut updates) = Client::connect(config).await.unwrap();
    // Subscribing to orders brings the open ones: none yet.
    let (_, open) = next_matching(&mut updates, open_orders).await;
    assert!(open.is_empty(), "{open:?}");
    let ticker = http::request(server.addr, "GET", "/api/v1/tickers/BTCUSDT", None, b"")
        .await
        .json();
    let last: Decimal = ticker["price"].as_str().unwrap().parse().unwrap();
    let (low, high) = (
        (last / Decimal::TWO).round_dp(2),
        (last * Decimal::TWO).round_dp(2),
    );
    let btc = Symbol::parse("BTCUSDT").unwrap();
    let qty: Decimal = "0.01".parse().unwrap();

    // TC0: a limit buy far below the market rests, is listed and announced.
    let resting = OrderRequest::limit(btc.clone(), Side::Buy, qty, low).unwrap();
    let placed = client.place_order(&resting).await.unwrap();
    assert!(!placed.replayed);
    assert_eq!(
        (
            placed.order.status,
            placed.order.price,
            placed.order.quantity
        ),
        (OrderStatus::New, Some(low), Some(qty))
    );
    assert_eq!(placed.order.client_order_id, resting.client_order_id);
    let announced =
        next_matching(&mut updates, order_event(placed.order.id, OrderStatus::New)).await;
    assert_eq!(announced, placed.order);
    let mut query = OrderQuery::latest(10);
    query.status = Some(StatusFilter::Open);
    let page = client.list_orders(&query).await.unwrap();
    assert_eq!(page.orders, std::slice::from_ref(&placed.order));
    assert!(!page.more);
    // TC1: the same request again is the same order, not a second one.
    let again = client.place_order(&resting).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order.id, placed.order.id);
    assert_eq!(client.list_orders(&query).await.unwrap().orders.len(), 1);

    // TC2: across a kill -9 the open order is back, and the client delivers it as the snapshot.
    server.kill9();
    let restarted = Server::start(&db, &[]);
    proxy.set_upstream(restarted.addr);
    proxy.cut(Mode::Forward);
    let (_, open) = next_matching(&mut updates, open_orders).await;
    assert_eq!(
        open.iter().map(|o| o.id).collect::<Vec<_>>(),
        [placed.order.id]
    );
    wait_for_price(restarted.addr).await;

    // TC3: cancel by id; cancelling again or an unknown id are typed refusals.
    let canceled = client
        .cancel_order(&OrderRef::Id(placed.order.id))
        .await
        .unwrap();
    assert_eq!(
        (canceled.status, canceled.reserved_cash),
        (OrderStatus::Canceled, Decimal::ZERO)
    );
    next_matching(
        &mut updates,
        order_event(placed.order.id, OrderStatus::Canceled),
    )
    .await;
    let err = client
        .cancel_order(&OrderRef::Id(placed.order.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::OrderNotOpen), "{err}");
    let err = client.cancel_order(&OrderRef::Id(999)).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnknownOrder), "{err}");

    // TC4: cancel all, by key afterwards is not open either.
    let a = client
        .place_order(&OrderRequest::limit(btc.clone(), Side::Buy, qty, low).unwrap())
        .await
        .unwrap();
    let b = client
        .place_order(&OrderRequest::limit(btc.clone(), Side::Buy, qty, low).unwrap())
        .await
        .unwrap();
    let all = client.cancel_all_orders(Some(&btc)).await.unwrap();
    let mut ids: Vec<u64> = all.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [a.order.id, b.order.id]);
    assert!(all.iter().all(|o| o.status == OrderStatus::Canceled));
    assert!(client.list_orders(&query).await.unwrap().orders.is_empty());
    assert!(client.cancel_all_orders(None).await.unwrap().is_empty());
    let key = OrderRef::ClientOrderId(a.order.client_order_id.clone().unwrap());
    let err = client.cancel_order(&key).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::OrderNotOpen), "{err}");

    // TC5: a limit far above the ask crosses and fills at once, with its trade.
    let crossing =
        OrderRequest::limit(btc.clone(), Side::Buy, "0.001".parse().unwrap(), high).unwrap();
    let filled = client.place_order(&crossing).await.unwrap();
    assert_eq!(filled.order.status, OrderStatus::Filled, "{filled:?}");
    let trade_id = filled.order.trade_id.expect("the fill's trade");
    let event = next_matching(
        &mut updates,
        order_event(filled.order.id, OrderStatus::Filled),
    )
    .await;
    assert_eq!(event.trade_id, Some(trade_id));
    let trades = http::request(restarted.addr, "GET", "/api/v1/trades?limit=1", None, b"")
        .await
        .json();
    assert_eq!(trades[0]["id"], trade_id);

    // TC6: refusals are typed.
    let err = client
        .place_order(
            &OrderRequest::limit(btc.clone(), Side::Buy, qty, high)
                .unwrap()
                .post_only()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::PostOnlyWouldCross), "{err}");
    // An order the server would refuse is refused before it is sent, with the server's code.
    let err = ClientError::from(
        OrderRequest::limit(btc.clone(), Side::Buy, qty, low)
            .unwrap()
            .time_in_force(TimeInForce::Fok)
            .and_then(NewOrder::post_only)
            .unwrap_err(),
    );
    assert!(
        matches!(&err, ClientError::InvalidRequest(e) if e.code() == "invalid_order"),
        "{err}"
    );
    let err = client
        .place_order(
            &OrderRequest::limit(btc.clone(), Side::Buy, Decimal::from(1000), low).unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InsufficientFunds), "{err}");
    // The key of a placed order, reused for another order.
    let reused = OrderRequest::limit(btc.clone(), Side::Sell, qty, high)
        .unwrap()
        .with_client_order_id(resting.client_order_id.clone());
    let err = client.place_order(&reused).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&ErrorCode::DuplicateClientOrderId),
        "{err}"
    );
    query.limit = 0;
    let err = client.list_orders(&query).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidLimit), "{err}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_orders_are_refetched_when_a_resume_cannot_replay_them() {
    // No history: every resume of a channel with a gap is `recovered: false`.
    let db = temp_db("orders-gap");
    let server = Server::start(&db, &[("CRYPTOBOT__BUS__HISTORY_SIZE", "0")]);
    wait_for_price(server.addr).await;
    let proxy = Proxy::start(server.addr).await;
    let config = fast_client(proxy.ws_url()).channels([Channel::Orders]);
    let (client, mut updates) = Client::connect(config).await.unwrap();
    next_matching(&mut updates, open_orders).await;
    let ticker = http::request(server.addr, "GET", "/api/v1/tickers/BTCUSDT", None, b"")
        .await
        .json();
    let last: Decimal = ticker["price"].as_str().unwrap().parse().unwrap();
    let low = (last / Decimal::TWO).round_dp(2);
    let btc = Symbol::parse("BTCUSDT").unwrap();
    let qty: Decimal = "0.01".parse().unwrap();
    let first = client
        .place_order(&OrderRequest::limit(btc.clone(), Side::Buy, qty, low).unwrap())
        .await
        .unwrap();
    next_matching(&mut updates, order_event(first.order.id, OrderStatus::New)).await;
    // Away while a second order is placed: its update can only come back through the refill.
    proxy.block(true);
    proxy.cut(Mode::Forward);
    let body = json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit",
                      "quantity": "0.01", "price": low.to_string()});
    let placed = http::request(
        server.addr,
        "POST",
        "/api/v1/orders",
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let second = placed.json()["order"]["id"].as_u64().unwrap();
    proxy.block(false);
    let recovered = next_matching(&mut updates, |update| match update {
        Update::Connected { recovered, .. } => Some(recovered),
        _ => None,
    })
    .await;
    assert_eq!(
        recovered.get(&Channel::Orders),
        Some(&false),
        "{recovered:?}"
    );
    let (seq, open) = next_matching(&mut updates, open_orders).await;
    assert_eq!(seq, None, "fetched over REST");
    assert_eq!(
        open.iter().map(|o| o.id).collect::<Vec<_>>(),
        [first.order.id, second]
    );
    client.close().await;
}

/// The auto-trading state of a `bot` event.
fn bot_event(update: Update) -> Option<(Option<u64>, bool, cryptobot_domain::BotState)> {
    match update {
        Update::Event(received) => match received.event {
            Event::BotStateChanged(bot) => Some((received.seq, received.snapshot, bot)),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_controls_answer_typed_and_the_bot_channel_follows() {
    use cryptobot_domain::{TradeOrigin, TradingState};
    let db = temp_db("controls");
    let server = Server::start(&db, &[]);
    wait_for_price(server.addr).await;
    let proxy = Proxy::start(server.addr).await;
    let config = fast_client(proxy.ws_url()).channels([Channel::Bot]);
    let (client, mut updates) = Client::connect(config).await.unwrap();
    // TC0: subscribing to `bot` brings the state: the configured one, never changed.
    let (seq, snapshot, bot) = next_matching(&mut updates, bot_event).await;
    assert_eq!((seq, snapshot), (Some(0), true));
    assert_eq!(bot.state, TradingState::Paused);
    assert_eq!((bot.changed_at, bot.changed_by.as_deref()), (None, None));
    // TC1: pausing a paused bot changes nothing; resuming does, and is pushed.
    assert_eq!(client.pause_trading().await.unwrap(), bot);
    let running = client.resume_trading().await.unwrap();
    assert_eq!(running.state, TradingState::Running);
    assert_eq!(running.changed_by.as_deref(), Some("anonymous"));
    let (seq, snapshot, pushed) = next_matching(&mut updates, bot_event).await;
    assert_eq!((seq, snapshot, pushed), (Some(1), false, running));
    let paused = client.pause_trading().await.unwrap();
    assert_eq!(paused.state, TradingState::Paused);
    // TC2: a force exit of nothing held is a typed refusal.
    let btc = Symbol::parse("BTCUSDT").unwrap();
    let err = client.force_exit(&btc, None).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::NoPosition), "{err}");
    let doge = Symbol::parse("DOGEUSDT").unwrap();
    let err = client.force_exit(&doge, None).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnknownSymbol), "{err}");
    // TC3: everything held is sold once; the same key answers the same trade.
    let bought = client
        .manual_trade(&TradeRequest::buy_amount(
            btc.clone(),
            "100".parse().unwrap(),
        ))
        .await
        .unwrap();
    let key = cryptobot_domain::ClientOrderId::parse("client-exit-1").unwrap();
    let exit = client.force_exit(&btc, Some(key.clone())).await.unwrap();
    assert!(!exit.replayed);
    assert_eq!(exit.trade.quantity, bought.trade.quantity);
    assert_eq!(
        (exit.trade.side, exit.trade.origin),
        (Side::Sell, TradeOrigin::ForceExit)
    );
    assert!(exit.canceled_orders.is_empty());
    let again = client.force_exit(&btc, Some(key)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.trade, exit.trade);
    // TC4: a force exit sent while the link is down is sent again with its key: it sells once.
    let eth = Symbol::parse("ETHUSDT").unwrap();
    client
        .manual_trade(&TradeRequest::buy_amount(
            eth.clone(),
            "100".parse().unwrap(),
        ))
        .await
        .unwrap();
    proxy.cut(Mode::Forward);
    let exit = client.force_exit(&eth, None).await.unwrap();
    assert!(!exit.replayed);
    let sold = http::request(
        server.addr,
        "GET",
        "/api/v1/trades?symbol=ETHUSDT",
        None,
        b"",
    )
    .await
    .json();
    let exits = sold
        .as_array()
        .unwrap()
        .iter()
        .filter(|trade| trade["origin"] == "force_exit")
        .count();
    assert_eq!(exits, 1, "{sold}");
    client.close().await;
}
