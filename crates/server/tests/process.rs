//! The real `cryptobot` binary as a process: command line, bad configuration, port in use,
//! SIGTERM, and `kill -9` in the middle of a stream of trades, on SQLite and on PostgreSQL.

#[path = "../../../tests/src/http.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
mod http;

#[path = "../../services/src/trading/storage/needs_postgres.rs"]
mod needs_postgres;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("cryptobot-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a started server keeps its books.
enum Storage {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

/// A started server process and the address it reported.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the binary on port 0 with the SQLite file `db` and waits for its "listening on"
    /// log line.
    fn start(db: &Path) -> Self {
        Self::start_on(&Storage::Sqlite(db.to_owned()))
    }

    /// Starts the binary on port 0 with `storage` and waits for its "listening on" log line.
    fn start_on(storage: &Storage) -> Self {
        let mut command = Command::new(BIN);
        match storage {
            Storage::Sqlite(db) => command.env("CRYPTOBOT__STORAGE__PATH", db),
            Storage::Postgres(url) => command
                .env("CRYPTOBOT__STORAGE__BACKEND", "postgres")
                .env("CRYPTOBOT__STORAGE__URL", url),
        };
        let mut child = command
            .env("CRYPTOBOT__SERVER__PORT", "0")
            .env("CRYPTOBOT__SERVER__WORKERS", "1")
            .env("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "20")
            .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
            // A durability stress test: as many trades as the server takes, not the per-IP rate.
            .env("CRYPTOBOT__SERVER__REST_RATE_PER_IP", "0")
            .env("RUST_LOG", "info")
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
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
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
    /// A failing test stops its server too.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("binary runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn help_and_bad_command_lines() {
    let (code, out) = run_to_exit(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("usage: cryptobot"), "{out}");
    let (code, out) = run_to_exit(&["--frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(out.contains("unknown argument"), "{out}");
}

#[test]
fn bad_configuration_exits_with_a_one_line_error() {
    // TC0: missing file
    let (code, out) = run_to_exit(&["--config", "/nonexistent/cryptobot.toml"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("error: invalid configuration"), "{out}");
    // TC1: unknown key in a file
    let dir = temp_dir("badcfg");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[market]\nsymbls = [\"BTCUSDT\"]\n").unwrap();
    let (code, out) = run_to_exit(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("symbls"), "{out}");
    assert_eq!(out.trim_end().lines().count(), 1, "{out}");
    // TC2: bad environment value
    let (code, out) = run_to_exit(&[], &[("CRYPTOBOT__SERVER__PORT", "99999")]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn a_public_address_without_authentication_refuses_to_start() {
    let (code, out) = run_to_exit(
        &[],
        &[
            ("CRYPTOBOT__SERVER__HOST", "0.0.0.0"),
            ("CRYPTOBOT__SERVER__PORT", "0"),
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert_eq!(out.trim_end().lines().count(), 1, "{out}");
    assert!(
        out.starts_with("error: invalid configuration: auth.mode:"),
        "{out}"
    );
    assert!(out.contains("auth.allow_insecure"), "{out}");
}

#[test]
fn port_in_use_exits_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let db = temp_dir("portinuse").join("db.sqlite");
    let (code, out) = run_to_exit(
        &[],
        &[
            ("CRYPTOBOT__SERVER__PORT", &port),
            ("CRYPTOBOT__STORAGE__PATH", db.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot listen on 127.0.0.1:"), "{out}");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let db = temp_dir("sigterm").join("db.sqlite");
    let mut server = Server::start(&db);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

/// The value of the sample `series` (name and labels as written) in a `/metrics` body.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_carry_build_info_and_the_process_series() {
    let db = temp_dir("metrics").join("db.sqlite");
    let server = Server::start(&db);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics = runtime.block_on(http::request(server.addr, "GET", "/metrics", None, b""));
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let text = &metrics.body;
    let version = env!("CARGO_PKG_VERSION");
    let build_info = format!("cryptobot_build_info{{version=\"{version}\",role=\"all\"}}");
    assert_eq!(sample(text, &build_info), Some(1.0), "{text}");
    for family in [
        "cryptobot_build_info gauge",
        "process_resident_memory_bytes gauge",
        "process_open_fds gauge",
        "process_cpu_seconds_total counter",
        "process_start_time_seconds gauge",
    ] {
        if cfg!(target_os = "linux") || family.starts_with("cryptobot") {
            assert!(
                text.contains(&format!("\n# TYPE {family}\n")),
                "{family}: {text}"
            );
        }
    }
    if !cfg!(target_os = "linux") {
        assert!(!text.contains("process_"), "{text}");
        return;
    }
    let rss = sample(text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1_048_576.0 && rss < 4e9, "{rss}");
    // The server's descriptors as the kernel lists them, give or take a connection or two.
    let fds = sample(text, "process_open_fds").unwrap();
    let listed = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count();
    #[allow(clippy::cast_precision_loss, reason = "a few dozen descriptors")]
    let listed = listed as f64;
    assert!(
        fds >= 3.0 && (fds - listed).abs() <= 4.0,
        "{fds} against {listed}"
    );
    let cpu = sample(text, "process_cpu_seconds_total").unwrap();
    assert!((0.0..60.0).contains(&cpu), "{cpu}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(text, "process_start_time_seconds").unwrap();
    // Started by this test, a few seconds ago (boot time is whole seconds, hence the slack).
    assert!(
        started <= now + 1.0 && started > now - 60.0,
        "{started} against {now}"
    );
}

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

/// Sends trades from several clients as fast as the server acknowledges them, recording every
/// acknowledged `client_order_id`, until the process dies.
async fn hammer(addr: SocketAddr, round: u32, acked: Arc<Mutex<HashSet<String>>>) {
    let mut clients = Vec::new();
    for client in 0..4 {
        let acked = Arc::clone(&acked);
        clients.push(tokio::spawn(async move {
            // Buys and sells alternate, so cash never runs out and every kill lands in the middle
            // of a stream of commits. Each client stops after 50 trades a round, so all rounds fit
            // the single 1000-row page the check reads (4 rounds x 4 clients x 50 = 800).
            let mut executed = 0;
            for n in 0.. {
                if executed == 50 {
                    // Keep the process busy with reads until it is killed.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if try_request_path(addr, "/api/v1/health").await.is_none() {
                        return;
                    }
                    continue;
                }
                let id = format!("crash-{round}-{client}-{n}");
                let body = if n % 2 == 0 {
                    json!({"symbol": "BTCUSDT", "side": "buy", "amount": "25", "client_order_id": id})
                } else {
                    json!({"symbol": "BTCUSDT", "side": "sell", "quantity": "0.0001", "client_order_id": id})
                };
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_request(addr, body.to_string()),
                )
                .await;
                match attempt {
                    Ok(Some(201)) => {
                        executed += 1;
                        acked.lock().unwrap().insert(id);
                    }
                    Ok(Some(_)) => {}
                    _ => return, // connection refused or reset: the process is gone
                }
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
}

/// `GET path`, `None` once the server is gone.
async fn try_request_path(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}

/// Like `http::request` but returns `None` instead of panicking when the server dies mid-way.
async fn try_request(addr: SocketAddr, body: String) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "POST /api/v1/trades HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}

#[test]
fn kill_9_never_loses_an_acknowledged_trade() {
    kill_9_loses_nothing(&Storage::Sqlite(temp_dir("crash").join("db.sqlite")));
}

#[test]
fn kill_9_on_postgres_never_loses_an_acknowledged_trade() {
    let Some(schema) = needs_postgres::TestSchema::create("kill_9_on_postgres") else {
        return;
    };
    kill_9_loses_nothing(&Storage::Postgres(schema.url()));
}

/// Kills the server four times in a stream of trades, then checks that every acknowledged
/// trade is stored and the books agree with the trade log.
fn kill_9_loses_nothing(db: &Storage) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    // Random kill points, reproducible: the seed is printed, and CRASH_SEED replays it.
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::from(d.subsec_nanos()))
        });
    println!("kill -9 test seed: CRASH_SEED={seed}");
    let mut state = seed;
    let kill_delays_ms: Vec<u64> = (0..4)
        .map(|_| {
            // SplitMix64 step: enough randomness for kill points, no dependency.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            20 + (z ^ (z >> 31)) % 480
        })
        .collect();
    for (round, delay_ms) in (0u32..).zip(kill_delays_ms) {
        let server = Server::start_on(db);
        let addr = server.addr;
        let sender = runtime.spawn(hammer(addr, round, Arc::clone(&acked)));
        // Counted from the moment the server listens, so kills land during the stream of commits.
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        runtime.block_on(sender).unwrap();
    }

    // A restart must succeed (it refuses books that do not balance) and show every acked trade.
    let server = Server::start_on(db);
    let addr = server.addr;
    let (trades, portfolio) = runtime.block_on(async {
        let trades = http::request(addr, "GET", "/api/v1/trades?limit=1000", None, b"")
            .await
            .json();
        let portfolio = http::request(addr, "GET", "/api/v1/portfolio", None, b"")
            .await
            .json();
        (trades, portfolio)
    });
    server.kill9();
    let trades = trades.as_array().unwrap();
    let acked = acked.lock().unwrap();
    assert!(
        !acked.is_empty(),
        "trades were acknowledged before the kills"
    );
    println!(
        "acknowledged {} trades over the kills, {} stored",
        acked.len(),
        trades.len()
    );
    assert!(
        trades.len() < 1000,
        "the check needs every trade in one page"
    );
    let stored: HashSet<String> = trades
        .iter()
        .filter_map(|t| t["client_order_id"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged trades lost: {lost:?}");
    // The books agree with the trade log.
    assert_eq!(
        portfolio["trade_count"].as_u64().unwrap() as usize,
        trades.len()
    );
    let is_buy = |t: &&Value| t["side"] == "buy";
    let spent: Decimal = trades
        .iter()
        .filter(is_buy)
        .map(|t| dec(&t["notional"]) + dec(&t["fee"]))
        .sum();
    let received: Decimal = trades
        .iter()
        .filter(|t| !is_buy(t))
        .map(|t| dec(&t["notional"]) - dec(&t["fee"]))
        .sum();
    assert_eq!(
        dec(&portfolio["cash"]),
        Decimal::from(10_000) - spent + received
    );
    let bought: Decimal = trades
        .iter()
        .filter(is_buy)
        .map(|t| dec(&t["quantity"]))
        .sum();
    let sold: Decimal = trades
        .iter()
        .filter(|t| !is_buy(t))
        .map(|t| dec(&t["quantity"]))
        .sum();
    assert_eq!(dec(&portfolio["positions"][0]["quantity"]), bought - sold);
    assert!(sold > Decimal::ZERO, "sells were part of the stream");
}

/// One HTTP request that answers `None` instead of panicking once the server is gone.
async fn try_call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// What the order hammer saw acknowledged.
#[derive(Default)]
struct OrderAcks {
    /// Keys of resting orders acknowledged `new`.
    resting: HashSet<String>,
    /// Keys of orders acknowledged `filled` at placing.
    filled: HashSet<String>,
    /// Keys of orders whose cancel was acknowledged.
    canceled: HashSet<String>,
}

/// Places resting buys far below the market, marketable buys far above it, and cancels of
/// earlier resting ones, from several clients, until the process dies.
async fn hammer_orders(addr: SocketAddr, round: u32, acks: Arc<Mutex<OrderAcks>>) {
    let mut clients = Vec::new();
    for client in 0..4 {
        let acks = Arc::clone(&acks);
        clients.push(tokio::spawn(async move {
            // 40 commands per client and round: every order of 4 rounds fits one 1000-row page.
            let mut done = 0;
            let mut mine: Vec<String> = Vec::new();
            for n in 0.. {
                if done == 40 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if try_request_path(addr, "/api/v1/health").await.is_none() {
                        return;
                    }
                    continue;
                }
                let id = format!("ord-{round}-{client}-{n}");
                let (method, path, body, kind) = match n % 3 {
                    0 => (
                        "POST",
                        "/api/v1/orders".to_owned(),
                        json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit",
                               "quantity": "0.002", "price": "1000", "client_order_id": id})
                        .to_string(),
                        "rest",
                    ),
                    1 => (
                        "POST",
                        "/api/v1/orders".to_owned(),
                        json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit",
                               "quantity": "0.00005", "price": "1000000", "client_order_id": id})
                        .to_string(),
                        "fill",
                    ),
                    _ => match mine.pop() {
                        Some(key) => (
                            "DELETE",
                            format!("/api/v1/orders/by-client-id/{key}"),
                            String::new(),
                            "cancel",
                        ),
                        None => continue,
                    },
                };
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_call(addr, method, &path, &body),
                )
                .await;
                let Ok(Some((status, reply))) = attempt else {
                    return; // connection refused or reset: the process is gone
                };
                done += 1;
                let mut acks = acks.lock().unwrap();
                match (kind, status) {
                    ("rest", 201) => {
                        assert_eq!(reply["order"]["status"], "new", "{reply}");
                        acks.resting.insert(id.clone());
                        mine.push(id);
                    }
                    ("fill", 201) => {
                        assert_eq!(reply["order"]["status"], "filled", "{reply}");
                        acks.filled.insert(id);
                    }
                    ("cancel", 200) => {
                        let key = reply["client_order_id"].as_str().unwrap().to_owned();
                        acks.canceled.insert(key);
                    }
                    _ => {}
                }
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
}

#[test]
fn kill_9_keeps_open_orders_fills_and_reservations() {
    let db = temp_dir("crash-orders").join("db.sqlite");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acks = Arc::new(Mutex::new(OrderAcks::default()));
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::from(d.subsec_nanos()))
        });
    println!("kill -9 orders test seed: CRASH_SEED={seed}");
    let mut state = seed;
    for round in 0..4_u32 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let delay_ms = 20 + (z ^ (z >> 31)) % 480;
        // A restart refuses books whose open orders reserve more than they hold.
        let server = Server::start(&db);
        let sender = runtime.spawn(hammer_orders(server.addr, round, Arc::clone(&acks)));
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        runtime.block_on(sender).unwrap();
    }

    let server = Server::start(&db);
    let addr = server.addr;
    let (orders, trades, portfolio) = runtime.block_on(async {
        let get = |path: &'static str| async move {
            http::request(addr, "GET", path, None, b"").await.json()
        };
        (
            get("/api/v1/orders?limit=1000").await,
            get("/api/v1/trades?limit=1000").await,
            get("/api/v1/portfolio").await,
        )
    });
    server.kill9();
    let orders = orders.as_array().unwrap();
    let trades = trades.as_array().unwrap();
    assert!(orders.len() < 1000 && trades.len() < 1000, "one page each");
    let acks = acks.lock().unwrap();
    assert!(
        !acks.resting.is_empty() && !acks.filled.is_empty(),
        "orders were acknowledged before the kills"
    );
    println!(
        "acknowledged {} resting, {} filled, {} canceled; {} orders stored",
        acks.resting.len(),
        acks.filled.len(),
        acks.canceled.len(),
        orders.len()
    );
    let status_of = |key: &str| {
        orders
            .iter()
            .find(|o| o["client_order_id"] == key)
            .map(|o| o["status"].as_str().unwrap().to_owned())
    };
    for key in &acks.resting {
        let status = status_of(key);
        let expected = if acks.canceled.contains(key) {
            "canceled"
        } else {
            // Not canceled by an acknowledged request: open, or canceled by one whose answer
            // the kill cut off.
            status
                .as_deref()
                .filter(|s| *s == "canceled")
                .unwrap_or("new")
        };
        assert_eq!(status.as_deref(), Some(expected), "resting order {key}");
    }
    for key in &acks.filled {
        assert_eq!(
            status_of(key).as_deref(),
            Some("filled"),
            "filled order {key}"
        );
    }
    // Nothing filled twice: each filled order has exactly one trade, under its key and id.
    for order in orders.iter().filter(|o| o["status"] == "filled") {
        let fills: Vec<&Value> = trades
            .iter()
            .filter(|t| t["client_order_id"] == order["client_order_id"])
            .collect();
        assert_eq!(fills.len(), 1, "fills of {order}");
        assert_eq!(fills[0]["id"], order["trade_id"], "{order}");
    }
    assert_eq!(
        trades.len(),
        orders.iter().filter(|o| o["status"] == "filled").count(),
        "every trade is an order's fill"
    );
    // Reservations balance: the portfolio's reserved cash is what the open orders hold.
    let reserved: Decimal = orders
        .iter()
        .filter(|o| o["status"] == "new")
        .map(|o| dec(&o["reserved_cash"]))
        .sum();
    assert_eq!(dec(&portfolio["reserved"]["cash"]), reserved);
    assert_eq!(
        dec(&portfolio["reserved"]["available_cash"]),
        dec(&portfolio["cash"]) - reserved
    );
    for order in orders.iter().filter(|o| o["status"] != "new") {
        assert_eq!(dec(&order["reserved_cash"]), Decimal::ZERO, "{order}");
    }
    // The books agree with the trade log.
    let spent: Decimal = trades
        .iter()
        .map(|t| dec(&t["notional"]) + dec(&t["fee"]))
        .sum();
    assert_eq!(dec(&portfolio["cash"]), Decimal::from(10_000) - spent);
}

#[test]
fn on_postgres_a_trade_and_its_replay_survive_kill_9_and_a_fenced_engine_writes_nothing() {
    let Some(schema) = needs_postgres::TestSchema::create("process_on_postgres") else {
        return;
    };
    let storage = Storage::Postgres(schema.url());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body =
        json!({"symbol": "BTCUSDT", "side": "buy", "amount": "25", "client_order_id": "pg-1"})
            .to_string();
    let trade = |addr| {
        let body = body.clone();
        async move {
            http::request(
                addr,
                "POST",
                "/api/v1/trades",
                Some("application/json"),
                body.as_bytes(),
            )
            .await
        }
    };
    let server = Server::start_on(&storage);
    let first = runtime.block_on(trade(server.addr));
    assert_eq!(first.status, 201, "{:?}", first.json());
    let ready = runtime.block_on(http::request(server.addr, "GET", "/readyz", None, b""));
    assert_eq!(
        ready.json()["checks"]["storage"],
        "ok",
        "{:?}",
        ready.json()
    );
    server.kill9();

    let server = Server::start_on(&storage);
    let (trades, replay, portfolio) = runtime.block_on(async {
        let trades = http::request(server.addr, "GET", "/api/v1/trades", None, b"").await;
        let replay = trade(server.addr).await;
        let portfolio = http::request(server.addr, "GET", "/api/v1/portfolio", None, b"").await;
        (trades.json(), replay, portfolio.json())
    });
    // Another engine takes the fence (as a successor's start does): this one commits nothing
    // more, says so, and is not ready.
    schema
        .client()
        .batch_execute("UPDATE engine_fence SET epoch = epoch + 1")
        .unwrap();
    let late =
        json!({"symbol": "BTCUSDT", "side": "buy", "amount": "25", "client_order_id": "pg-2"})
            .to_string();
    let (fenced, ready) = runtime.block_on(async {
        let fenced = http::request(
            server.addr,
            "POST",
            "/api/v1/trades",
            Some("application/json"),
            late.as_bytes(),
        )
        .await;
        let ready = http::request(server.addr, "GET", "/readyz", None, b"").await;
        (fenced, ready)
    });
    server.kill9();
    assert_eq!(fenced.status, 503, "{:?}", fenced.json());
    assert_eq!(fenced.json()["code"], "engine_fenced");
    assert_eq!(ready.status, 503);
    let check = ready.json()["checks"]["storage"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(check.contains("engine fenced"), "{check}");
    let stored: i64 = schema
        .client()
        .query_one("SELECT count(*) FROM trades", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 1, "the fenced trade was not written");
    let kept = &first.json()["trade"];
    assert_eq!(trades.as_array().unwrap(), std::slice::from_ref(kept));
    assert_eq!(replay.status, 200);
    assert_eq!(replay.json()["replayed"], true);
    assert_eq!(&replay.json()["trade"], kept);
    assert_eq!(portfolio["trade_count"], 1);
    assert_eq!(
        dec(&portfolio["cash"]),
        Decimal::from(10_000) - dec(&kept["notional"]) - dec(&kept["fee"])
    );
}

#[test]
fn an_unreachable_postgres_exits_with_a_one_line_error() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let (code, out) = run_to_exit(
        &[],
        &[
            ("CRYPTOBOT__SERVER__PORT", "0"),
            ("CRYPTOBOT__STORAGE__BACKEND", "postgres"),
            (
                "CRYPTOBOT__STORAGE__URL",
                "postgres://bot:s3cret@127.0.0.1:1/books",
            ),
        ],
    );
    assert_ne!(code, 0, "{out}");
    let error = out
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(
        error.contains("postgres://bot:***@127.0.0.1:1/books"),
        "{error}"
    );
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(!out.contains("s3cret"), "{out}");
}
