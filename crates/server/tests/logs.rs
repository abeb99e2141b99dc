//! The binary's logs as an operator reads them: `log.format = "json"`, the startup line, one
//! access line per REST request, `log.level` checked at start, and a stderr whose reader went
//! away (the server keeps serving).

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
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cryptobot");
/// Longest wait for anything expected (a hang guard, not a performance assertion).
const GUARD: Duration = Duration::from_secs(20);

fn temp_db(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("cryptobot-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("cryptobot.db")
}

fn command(db: &PathBuf, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("RUST_LOG")
        .env("CRYPTOBOT__SERVER__PORT", "0")
        .env("CRYPTOBOT__SERVER__WORKERS", "1")
        .env("CRYPTOBOT__STORAGE__PATH", db)
        .env("CRYPTOBOT__TRADING__AUTO_TRADE", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Every stderr line of `child`, sent as it comes.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first JSON line for which `wanted` holds, failing after [`GUARD`].
fn json_line(rx: &mpsc::Receiver<String>, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the expected log line in time");
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON log line ({err}): {line}"));
        if wanted(&value) {
            return value;
        }
    }
}

fn listening(line: &Value) -> Option<SocketAddr> {
    line["message"]
        .as_str()?
        .strip_prefix("listening on http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// The server process; killed if a test fails before it stops it, so no server outlives its test.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then the exit status.
fn stop(mut running: Running) -> std::process::ExitStatus {
    let mut child = running.0.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_startup_line_and_one_access_line_per_request() {
    let db = temp_db("logs-json");
    let mut child = Running(Some(
        command(&db, &[("CRYPTOBOT__LOG__FORMAT", "json")])
            .spawn()
            .unwrap(),
    ));
    let rx = lines(child.child());
    // TC0: the first line says what runs and where its settings came from.
    let start = json_line(&rx, |_| true);
    assert_eq!(start["message"], "cryptobot starting", "{start}");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["role"], "all");
    let config = start["config"].as_str().unwrap();
    assert!(config.starts_with("defaults, environment ("), "{config}");
    assert_eq!(start["level"], "INFO");
    let listen = json_line(&rx, |line| listening(line).is_some());
    let addr = listening(&listen).unwrap();

    // TC1: a REST request: its line has the path without the query, status, client, principal
    let response = http::request_with_headers(
        addr,
        "GET",
        "/api/v1/tickers/BTCUSDT?token=not-for-logs",
        &[("X-Forwarded-For", "203.0.113.9")],
        None,
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let access = json_line(&rx, |line| line["target"] == "cryptobot_server::access");
    assert_eq!(access["method"], "GET", "{access}");
    assert_eq!(access["path"], "/api/v1/tickers/BTCUSDT");
    assert_eq!(access["status"], 200);
    // The peer is not a trusted proxy: its own address, not what it forwarded.
    assert_eq!(access["client"], "127.0.0.1");
    assert_eq!(access["principal"], "anonymous");
    assert!(access["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(!access.to_string().contains("not-for-logs"), "{access}");

    // TC2: a trade's line names its key and who asked (auth.mode none: `anonymous`)
    let trade = http::request(
        addr,
        "POST",
        "/api/v1/trades",
        Some("application/json"),
        br#"{"symbol":"BTCUSDT","side":"buy","amount":"50","client_order_id":"log-t1"}"#,
    )
    .await;
    assert_eq!(trade.status, 201, "{}", trade.body);
    let executed = json_line(&rx, |line| line["message"] == "trade executed");
    assert_eq!(executed["client_order_id"], "log-t1", "{executed}");
    assert_eq!(executed["principal"], "anonymous", "{executed}");
    assert_eq!(executed["origin"], "manual", "{executed}");

    // TC3: a change of the auto-trading state is logged with who made it, and so is a force
    // exit's trade with its origin, key and principal
    let resumed = http::request(addr, "POST", "/api/v1/bot/resume", None, b"").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let changed = json_line(&rx, |line| line["message"] == "auto-trading resumed");
    assert_eq!(changed["state"], "running", "{changed}");
    assert_eq!(changed["principal"], "anonymous", "{changed}");
    let exit = http::request(
        addr,
        "POST",
        "/api/v1/positions/BTCUSDT/exit",
        Some("application/json"),
        br#"{"client_order_id":"log-x1"}"#,
    )
    .await;
    assert_eq!(exit.status, 201, "{}", exit.body);
    let executed = json_line(&rx, |line| {
        line["message"] == "trade executed" && line["origin"] == "force_exit"
    });
    assert_eq!(executed["client_order_id"], "log-x1", "{executed}");
    assert_eq!(executed["principal"], "anonymous", "{executed}");

    // TC4: a 404 outside the API is logged with its status; nothing authenticated it
    let missing = http::request(addr, "GET", "/nothing-here", None, b"").await;
    assert_eq!(missing.status, 404);
    let access = json_line(&rx, |line| {
        line["target"] == "cryptobot_server::access" && line["path"] == "/nothing-here"
    });
    assert_eq!(
        (access["path"].as_str(), access["status"].as_u64()),
        (Some("/nothing-here"), Some(404))
    );
    assert_eq!(access["principal"], "-");
    assert!(stop(child).success());
}

#[test]
fn a_log_level_that_is_no_level_stops_the_start_with_exit_code_2() {
    let db = temp_db("logs-level");
    for level in ["verbose", "cryptobot_server=chatty"] {
        let output = command(&db, &[("CRYPTOBOT__LOG__LEVEL", level)])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{level}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("log.level: ") && stderr.contains(level),
            "{level}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_serving_when_its_stderr_reader_goes_away() {
    let db = temp_db("logs-epipe");
    let mut child = Running(Some(
        command(&db, &[("CRYPTOBOT__LOG__FORMAT", "json")])
            .spawn()
            .unwrap(),
    ));
    let stderr = child.child().stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    let addr = loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stderr ended before listening"
        );
        if let Some(addr) = serde_json::from_str::<Value>(&line)
            .ok()
            .as_ref()
            .and_then(listening)
        {
            break addr;
        }
    };
    // The reader goes away: every later log line meets a closed pipe.
    drop(reader);
    for _ in 0..20 {
        let response = http::request(addr, "GET", "/api/v1/tickers", None, b"").await;
        assert_eq!(response.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "the server exited"
    );
    let response = http::request(addr, "GET", "/api/v1/time", None, b"").await;
    assert_eq!(response.status, 200);
    // A graceful stop still ends with success, not a panic's 101.
    assert_eq!(stop(child).code(), Some(0));
}
