//! `/metrics` against the real server: a trade over the WebSocket and one over REST move the
//! histograms of that command, route and status and the labelled counters with the right labels;
//! a refused upgrade counts under its reason (docs/operations.md, "Metrics per node").

use std::time::Duration;

use cryptobot_integration_tests::ws::{FRAME_GUARD, Socket, next_of_type};
use cryptobot_integration_tests::{TestApp, eventually};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The value of one series (name with its labels, as the exposition writes them), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// The next text frame as JSON, control frames skipped (bounded by the suite's frame guard).
async fn next_frame(socket: &mut Socket) -> serde_json::Value {
    use futures_util::StreamExt;
    let text = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return text,
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    };
    let text = tokio::time::timeout(FRAME_GUARD, text)
        .await
        .expect("a frame within the guard");
    serde_json::from_str(&text).expect("frames are JSON")
}

async fn scrape(app: &TestApp) -> String {
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    metrics.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_over_websocket_and_rest_move_the_histograms_and_labelled_counters() {
    let app = TestApp::spawn(&[]).await;
    let before = scrape(&app).await;
    let manual_buys =
        "cryptobot_trades_executed_total{origin=\"manual\",side=\"buy\",symbol=\"BTCUSDT\"}";
    assert_eq!(sample(&before, manual_buys), Some(0.0), "{before}");
    assert_eq!(
        sample(
            &before,
            "cryptobot_command_seconds_count{command=\"manual_trade\"}"
        ),
        Some(0.0)
    );

    // TC0: a trade over REST, then a refused one (far more than the cash)
    let order = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.001"});
    let traded = app.post_json("/api/v1/trades", &order).await;
    assert_eq!(traded.status, 201, "{}", traded.body);
    let too_big = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "1000000"});
    let refused = app.post_json("/api/v1/trades", &too_big).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let code = refused.json()["code"].as_str().unwrap().to_owned();

    // TC1: a trade over the WebSocket (its trade notification is delivered on `trades`), and an
    // unparsable request
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("upgrade");
    let command = json!({"type": "manual_trade", "id": 1, "payload": {"symbol": "BTCUSDT", "side": "buy", "amount": "50"}});
    socket
        .send(Message::text(command.to_string()))
        .await
        .unwrap();
    // The reply and the notification on `trades` come in either order.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = next_frame(&mut socket).await;
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        if ["trade_executed", "trade_notification"].contains(&kind.as_str())
            && !seen.contains(&kind)
        {
            seen.push(kind);
        }
    }
    socket.send(Message::text("not json")).await.unwrap();
    next_of_type(&mut socket, "error").await;
    // Live tickers are timed too (the first one after subscribing is the latest known, a
    // snapshot, which is not).
    let subscribe = json!({"type": "subscribe_ticker", "payload": {"symbol": "BTCUSDT"}});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    for _ in 0..3 {
        next_of_type(&mut socket, "ticker_update").await;
    }

    let body = eventually(Duration::from_secs(10), "worker counts flushed", || async {
        let body = scrape(&app).await;
        // The writers' counts reach the shared series about once a second.
        let at_least = |series: &str, n: f64| sample(&body, series).is_some_and(|v| v >= n);
        (at_least(
            "cryptobot_ws_delivery_seconds_count{channel=\"trades\"}",
            1.0,
        ) && at_least(
            "cryptobot_ws_delivery_seconds_count{channel=\"ticker\"}",
            1.0,
        ) && at_least(
            "cryptobot_ws_frames_sent_total{type=\"trade_executed\"}",
            1.0,
        ) && at_least(
            "cryptobot_ws_frames_sent_total{type=\"ticker_update\"}",
            3.0,
        ))
        .then_some(body)
    })
    .await;
    assert_eq!(sample(&body, manual_buys), Some(2.0), "{body}");
    assert_eq!(
        sample(
            &body,
            &format!("cryptobot_trades_rejected_total{{code=\"{code}\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "cryptobot_http_request_seconds_count{method=\"POST\",route=\"/api/v1/trades\",status=\"201\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "cryptobot_http_request_seconds_count{method=\"POST\",route=\"/api/v1/trades\",status=\"422\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "cryptobot_command_seconds_count{command=\"manual_trade\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "cryptobot_command_seconds_count{command=\"unknown\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "cryptobot_ws_error_frames_total{code=\"invalid_message\"}"
        ),
        Some(1.0)
    );
    // Three trade commands reached the engine (the refused one included).
    assert!(
        sample(
            &body,
            "cryptobot_engine_command_seconds_count{command=\"execute\"}"
        ) >= Some(3.0),
        "{body}"
    );
    assert_eq!(sample(&body, "cryptobot_engine_queue_depth"), Some(0.0));
    // A histogram's +Inf bucket holds every observation.
    assert_eq!(
        sample(
            &body,
            "cryptobot_command_seconds_bucket{command=\"manual_trade\",le=\"+Inf\"}"
        ),
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_counts_under_its_reason() {
    let app = TestApp::spawn(&[]).await;
    let series = "cryptobot_ws_upgrades_rejected_total{reason=\"origin_not_allowed\"}";
    assert_eq!(sample(&scrape(&app).await, series), Some(0.0));
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "the upgrade was admitted");
    let body = scrape(&app).await;
    assert_eq!(sample(&body, series), Some(1.0), "{body}");
    assert_eq!(
        sample(
            &body,
            "cryptobot_ws_upgrades_rejected_total{reason=\"unauthorized\"}"
        ),
        Some(0.0)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_durations_are_labelled_by_route_pattern_never_the_raw_path() {
    let app = TestApp::spawn(&[]).await;
    // Only DELETE is routed there: a GET is refused with 405, under the pattern all the same.
    assert_eq!(app.get("/api/v1/orders/12345").await.status, 405);
    assert_eq!(app.get("/no/such/page").await.status, 404);
    let body = scrape(&app).await;
    assert_eq!(
        sample(
            &body,
            "cryptobot_http_request_seconds_count{method=\"GET\",route=\"/api/v1/orders/{id}\",status=\"405\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains("12345"), "{body}");
    assert!(
        sample(
            &body,
            "cryptobot_http_request_seconds_count{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ) >= Some(1.0),
        "{body}"
    );
    app.stop().await;
}
