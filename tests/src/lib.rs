//! Support for the end-to-end suite: start the real application on 127.0.0.1:0 with a fresh
//! SQLite file, and talk to it over real sockets.

/// A TCP proxy that adds delay and emulated loss (the fault tests' network).
pub mod fault_proxy;
pub mod http;
/// Network namespaces joined to the host by veth pairs (the fault tests' partitions).
pub mod netns;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cryptobot_server::{Application, Settings, StartupError};
use http::Response;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running application under test.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its SQLite file.
    pub storage_path: PathBuf,
    shutdown: CancellationToken,
    running: JoinHandle<Result<(), StartupError>>,
}

/// Returns a fresh, unique SQLite path under the system temp directory.
#[must_use]
pub fn temp_db_path() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "cryptobot-it-{}-{}-{nanos}/cryptobot.db",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Settings for tests: port 0, one worker, fast ticks, no auto-trading, quiet logs, the given
/// SQLite file, plus
/// `extra` environment-style overrides such as `("CRYPTOBOT__TRADING__FEE_RATE", "0")`.
///
/// # Panics
/// When the overrides do not load: a broken test.
#[must_use]
pub fn test_settings(storage_path: &Path, extra: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = [
        ("CRYPTOBOT__SERVER__PORT", "0"),
        ("CRYPTOBOT__SERVER__WORKERS", "1"),
        ("CRYPTOBOT__SERVER__SHUTDOWN_TIMEOUT_SECS", "1"),
        ("CRYPTOBOT__MARKET__TICKS_PER_SECOND", "20"),
        ("CRYPTOBOT__LOG__LEVEL", "warn"),
        // The bot's own trades would race the tests' expectations about cash and trade counts.
        ("CRYPTOBOT__TRADING__AUTO_TRADE", "false"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.push((
        "CRYPTOBOT__STORAGE__PATH".into(),
        storage_path.to_string_lossy().into_owned(),
    ));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::load_with_env(None, env).expect("test settings load")
}

/// Token of the read-only principal `reader` of [`TestApp::spawn_with_tokens`].
pub const READER: &str = "reader-token-0123456789";
/// Token of the principal `trader` (read and trade) of [`TestApp::spawn_with_tokens`].
pub const TRADER: &str = "trader-token-0123456789";

impl TestApp {
    /// Starts the application with token authentication and two principals: `reader`
    /// ([`READER`], scope `read`) and `trader` ([`TRADER`], scopes `read` and `trade`).
    pub async fn spawn_with_tokens() -> Self {
        let tokens = serde_json::json!([
            {"name": "reader", "token": READER, "scopes": ["read"]},
            {"name": "trader", "token": TRADER, "scopes": ["read", "trade"]},
        ])
        .to_string();
        Self::spawn(&[
            ("CRYPTOBOT__AUTH__MODE", "token"),
            ("CRYPTOBOT__AUTH__TOKENS", &tokens),
        ])
        .await
    }

    /// Starts the application with a fresh SQLite file.
    pub async fn spawn(extra: &[(&str, &str)]) -> Self {
        Self::spawn_on(temp_db_path(), extra).await
    }

    /// Starts the application on an existing (or new) SQLite file.
    ///
    /// # Panics
    /// When the application does not start: a failed test.
    pub async fn spawn_on(storage_path: PathBuf, extra: &[(&str, &str)]) -> Self {
        cryptobot_server::telemetry::init(&cryptobot_server::config::LogSettings {
            level: "warn".into(),
            format: cryptobot_server::config::LogFormat::Text,
        });
        let settings = test_settings(&storage_path, extra);
        let app = Application::build(settings)
            .await
            .expect("application starts");
        let addr = app.local_addr();
        let shutdown = app.shutdown_token();
        let running = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            storage_path,
            shutdown,
            running,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        http::request(self.addr, "GET", path, None, b"").await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        http::request(
            self.addr,
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &serde_json::Value) -> Response {
        http::request(
            self.addr,
            "PATCH",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
        .await
    }

    /// The WebSocket URL of this server.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v1/ws", self.addr)
    }

    /// Stops the application and waits until it has released everything (storage included).
    ///
    /// # Panics
    /// When it does not stop within 10 s or stops with an error.
    pub async fn stop(self) -> PathBuf {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("application stops within 10 s")
            .expect("application task did not panic")
            .expect("application stopped cleanly");
        self.storage_path
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, failing after `limit` (a hang guard, not a
/// performance assertion).
///
/// # Panics
/// When `limit` passes first.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// WebSocket helpers shared by the end-to-end tests.
pub mod ws {
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::Value;
    use tokio_tungstenite::tungstenite::Message;

    /// A client connection to the server under test.
    pub type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Longest a test waits for an expected frame (a hang guard, not a performance assertion).
    pub const FRAME_GUARD: Duration = Duration::from_secs(10);

    /// Reads frames until one has `type == kind`.
    ///
    /// # Panics
    /// When the socket ends first or no such frame arrives within [`FRAME_GUARD`].
    pub async fn next_of_type(socket: &mut Socket, kind: &str) -> Value {
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
        tokio::time::timeout(FRAME_GUARD, wait)
            .await
            .unwrap_or_else(|_| panic!("no {kind} frame within {FRAME_GUARD:?}"))
    }

    /// Connects to `url` and subscribes to `symbol`'s tickers; returns once the subscription is
    /// acknowledged.
    ///
    /// # Panics
    /// When the upgrade or the subscription fails: a failed test.
    pub async fn subscribed_to_ticker(url: &str, symbol: &str) -> Socket {
        use futures_util::SinkExt;
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        let request =
            serde_json::json!({"type": "subscribe_ticker", "payload": {"symbol": symbol}});
        socket
            .send(Message::text(request.to_string()))
            .await
            .expect("send");
        next_of_type(&mut socket, "subscription_success").await;
        socket
    }
}
