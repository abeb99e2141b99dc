//! Per-address limits and the origin policy against the real server: connection attempts and REST
//! requests over their rate get 429 with `Retry-After` and a JSON body, nothing refused executes,
//! and clients already connected keep streaming (docs/security.md).

use std::time::Duration;

use cryptobot_integration_tests::TestApp;
use cryptobot_integration_tests::http::Response;
use cryptobot_integration_tests::ws::{next_of_type, subscribed_to_ticker};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Status, `Retry-After` and JSON body of a refused upgrade (101 and nulls when it succeeded).
async fn upgrade(app: &TestApp, origin: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = app.ws_url().into_client_request().expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => (101, None, Value::Null),
        Err(WsError::Http(response)) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).expect("refusal bodies are JSON"))
                .unwrap_or(Value::Null);
            (response.status().as_u16(), retry_after, body)
        }
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

/// Rounds of "use up the budget, then try" before a test gives up: a loaded machine may be slow
/// enough for a token to come back between two requests, which is the limiter working.
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_over_the_per_address_rate_get_429_and_open_sockets_keep_streaming() {
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__WS__CONNECT_RATE_PER_IP", "1"),
        ("CRYPTOBOT__WS__CONNECT_BURST_PER_IP", "3"),
    ])
    .await;
    // TC0: the burst is admitted (one of them stays open and subscribed)
    let mut good = subscribed_to_ticker(&app.ws_url(), "BTCUSDT").await;
    let mut admitted = 1;
    // TC1: attempts over the rate are refused before any upgrade
    let refusal = loop {
        let (status, retry_after, body) = upgrade(&app, None).await;
        match status {
            101 => admitted += 1,
            429 => break (retry_after, body),
            other => panic!("unexpected status {other}: {body}"),
        }
        assert!(admitted <= 3 + ROUNDS, "no 429 after {admitted} upgrades");
    };
    assert!(
        admitted >= 3,
        "the burst of 3 was admitted first ({admitted})"
    );
    let (retry_after, body) = refusal;
    assert_eq!(body["code"], "rate_limited", "{body}");
    let wait: u64 = retry_after
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // TC2: the connected client is unaffected, and REST has its own budget
    next_of_type(&mut good, "ticker_update").await;
    next_of_type(&mut good, "ticker_update").await;
    assert_eq!(app.get("/api/v1/tickers").await.status, 200);
    // TC3: after Retry-After the address may connect again
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(upgrade(&app, None).await.0, 101);
    app.stop().await;
}

/// Uses up the address's REST budget with cheap GETs, then sends `request`; repeats until the
/// request itself is refused. Returns the refusal and how many of the requests were executed.
async fn refused_after_draining<F, Fut>(app: &TestApp, mut request: F) -> (Response, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    for executed in 0..ROUNDS {
        let mut drained = false;
        for _ in 0..20 {
            if app.get("/api/v1/tickers").await.status == 429 {
                drained = true;
                break;
            }
        }
        assert!(drained, "20 requests at a rate of 1/s were never refused");
        let response = request().await;
        if response.status == 429 {
            return (response, executed);
        }
        assert!(
            response.status < 300,
            "{} {}",
            response.status,
            response.body
        );
    }
    panic!("the request was never refused in {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requests_over_the_per_address_rate_get_429_and_execute_nothing() {
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__SERVER__REST_RATE_PER_IP", "1"),
        ("CRYPTOBOT__SERVER__REST_BURST_PER_IP", "3"),
    ])
    .await;
    // TC0: the burst passes, health probes included
    assert_eq!(app.get("/api/v1/health").await.status, 200);
    assert_eq!(app.get("/api/v1/tickers").await.status, 200);
    assert_eq!(app.get("/api/v1/trades").await.status, 200);
    // TC1: a trade over the rate is refused and not executed
    let buy = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "100"});
    let (refused, executed) =
        refused_after_draining(&app, || app.post_json("/api/v1/trades", &buy)).await;
    assert_eq!(refused.json()["code"], "rate_limited", "{}", refused.body);
    let wait: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // TC2: every route is limited, /metrics and health too
    let (metrics, _) = refused_after_draining(&app, || app.get("/metrics")).await;
    assert_eq!(metrics.json()["code"], "rate_limited");
    let (health, _) = refused_after_draining(&app, || app.get("/api/v1/health")).await;
    assert_eq!(health.json()["code"], "rate_limited");
    // TC3: the WebSocket upgrade has its own budget
    assert_eq!(upgrade(&app, None).await.0, 101);
    // TC4: after Retry-After requests pass again, and only the admitted trades ran
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let trades = app.get("/api/v1/trades").await;
    assert_eq!(trades.status, 200, "{}", trades.body);
    assert_eq!(
        trades.json().as_array().map(Vec::len),
        Some(executed),
        "{}",
        trades.body
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_origins_are_the_servers_own_and_localhost_and_can_be_narrowed() {
    let app = TestApp::spawn(&[]).await;
    let own = format!("http://{}", app.addr);
    let cases = [
        // TC0: defaults
        (Some(own.as_str()), 101),
        (Some("http://localhost:3000"), 101),
        (Some("http://127.0.0.1:5173"), 101),
        (None, 101),
        (Some("https://evil.example"), 403),
        (Some("http://localhost.evil.example"), 403),
    ];
    for (origin, expected) in cases {
        let (status, _, body) = upgrade(&app, origin).await;
        assert_eq!(status, expected, "{origin:?}: {body}");
        if expected == 403 {
            assert_eq!(body["code"], "origin_not_allowed", "{body}");
        }
    }
    app.stop().await;

    // TC1: localhost off (lists are a TOML key, unit-tested in the gateway)
    let app = TestApp::spawn(&[("CRYPTOBOT__WS__ALLOW_LOCALHOST_ORIGINS", "false")]).await;
    let own = format!("http://{}", app.addr);
    let cases = [
        (Some(own.as_str()), 101),
        (Some("http://localhost:3000"), 403),
        (Some("https://evil.example"), 403),
    ];
    for (origin, expected) in cases {
        assert_eq!(upgrade(&app, origin).await.0, expected, "{origin:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_timed_out_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(&[("CRYPTOBOT__SERVER__REQUEST_HEAD_TIMEOUT_MS", "300")]).await;
    let mut good = subscribed_to_ticker(&app.ws_url(), "BTCUSDT").await;
    // TC0: half a request head, then silence (a slowloris upgrade)
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("the server closes a stalled handshake");
    // Either a 408 and then EOF, or EOF (a reset also ends the read).
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_err() || answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // TC1: a connected client is unaffected
    next_of_type(&mut good, "ticker_update").await;
    app.stop().await;
}
