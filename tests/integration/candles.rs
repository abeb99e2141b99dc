//! Candles against the real server: the `candles:<SYMBOL>:<interval>` channel with its snapshot
//! and live updates, and `GET /api/v1/candles/{symbol}` with its parameters.

use std::time::Duration;

use cryptobot_integration_tests::ws::{Socket, next_of_type};
use cryptobot_integration_tests::{TestApp, eventually};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn send(socket: &mut Socket, value: &Value) {
    socket
        .send(Message::text(value.to_string()))
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_candle_channel_and_history() {
    let app = TestApp::spawn(&[]).await;
    // The first ticker opens the candles.
    let open = eventually(Duration::from_secs(10), "an open candle", || async {
        let candles = app.get("/api/v1/candles/BTCUSDT?interval=1m").await.json();
        candles.as_array().and_then(|c| c.last().cloned())
    })
    .await;
    assert_eq!(open["symbol"], "BTCUSDT");
    assert_eq!(
        (open["interval"].clone(), open["closed"].clone()),
        (json!("1m"), json!(false))
    );
    let time: chrono::DateTime<chrono::Utc> = open["open_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(time.timestamp() % 60, 0, "keyed by the minute's start");
    for field in ["open", "high", "low", "close", "volume"] {
        assert!(open[field].is_string(), "{field}: {open}");
    }
    // TC0: subscribing sends the open candle as a snapshot, then live updates with seq
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    send(
        &mut ws,
        &json!({"type": "subscribe", "id": 1, "payload": {"channels": ["candles:BTCUSDT:1m"]}}),
    )
    .await;
    let ack = next_of_type(&mut ws, "subscribed").await;
    assert!(
        ack["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("candles:BTCUSDT:1m"))
    );
    let snapshot = next_of_type(&mut ws, "candle").await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["channel"], "candles:BTCUSDT:1m");
    assert_eq!(snapshot["payload"]["open_time"], open["open_time"]);
    let live = next_of_type(&mut ws, "candle").await;
    assert!(live.get("snapshot").is_none(), "{live}");
    assert_eq!(live["channel"], "candles:BTCUSDT:1m");
    assert!(live["seq"].as_u64().unwrap() >= 1);
    // TC1: unknown intervals and symbols are refused with their codes
    for (channel, code) in [
        ("candles:BTCUSDT:2m", "unknown_channel"),
        ("candles:DOGEUSDT:1m", "unknown_symbol"),
        ("candles:btc:1m", "invalid_symbol"),
    ] {
        send(
            &mut ws,
            &json!({"type": "subscribe", "id": 2, "payload": {"channels": [channel]}}),
        )
        .await;
        let refused = next_of_type(&mut ws, "error").await;
        assert_eq!(
            (refused["code"].as_str(), refused["channel"].as_str()),
            (Some(code), Some(channel))
        );
    }
    // TC2: history parameters
    let limited = app
        .get("/api/v1/candles/BTCUSDT?interval=1d&limit=1")
        .await
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    assert_eq!(limited[0]["interval"], "1d");
    let before = app
        .get("/api/v1/candles/BTCUSDT?end=2020-01-01T00:00:00Z")
        .await
        .json();
    assert_eq!(before, json!([]));
    for (query, status, code) in [
        ("interval=2m", 400, "invalid_query"),
        ("limit=0", 400, "invalid_limit"),
        ("limit=1001", 400, "invalid_limit"),
        ("end=yesterday", 400, "invalid_query"),
        ("page=1", 400, "invalid_query"),
    ] {
        let response = app.get(&format!("/api/v1/candles/BTCUSDT?{query}")).await;
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (status, Some(code)),
            "{query}"
        );
    }
    let unknown = app.get("/api/v1/candles/DOGEUSDT").await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (404, Some("unknown_symbol"))
    );
    app.stop().await;
}
