//! The WebSocket endpoint of the real server, fed by the real services.

use std::time::Duration;

use cryptobot_integration_tests::TestApp;
use cryptobot_integration_tests::ws::next_of_type;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_tickers_and_trades_from_the_real_services() {
    let app = TestApp::spawn(&[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("upgrade");
    socket
        .send(Message::text(
            json!({"type": "subscribe_ticker", "payload": {"symbol": "BTCUSDT"}}).to_string(),
        ))
        .await
        .unwrap();
    let ack = next_of_type(&mut socket, "subscription_success").await;
    assert_eq!(ack["message"], "Subscribed to BTCUSDT");
    let snapshot = next_of_type(&mut socket, "ticker_update").await;
    assert_eq!(snapshot["payload"]["symbol"], "BTCUSDT");
    let live = next_of_type(&mut socket, "ticker_update").await;
    assert!(live["seq"].as_u64().unwrap() > snapshot["seq"].as_u64().unwrap_or(0));

    let buy = app
        .post_json(
            "/api/v1/trades",
            &json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01"}),
        )
        .await;
    assert_eq!(buy.status, 201, "{}", buy.body);
    let note = next_of_type(&mut socket, "trade_notification").await;
    assert_eq!(note["payload"]["symbol"], "BTCUSDT");
    assert_eq!(note["payload"]["type"], "buy");
    assert_eq!(note["payload"]["quantity"], "0.01");
    assert_eq!(note["payload"]["price"], buy.json()["trade"]["price"]);
    assert!(note["payload"]["purchased_at"].is_string());
    assert!(note["timestamp"].is_i64() || note["timestamp"].is_u64());
    let portfolio = next_of_type(&mut socket, "portfolio_update").await;
    assert!(portfolio["payload"]["cash"].is_string());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_going_away() {
    let app = TestApp::spawn(&[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("upgrade");
    let stopping = tokio::spawn(app.stop());
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = socket.next().await {
            if let Ok(Message::Close(frame)) = frame {
                return frame;
            }
        }
        None
    })
    .await
    .expect("close frame within 5 s");
    assert_eq!(
        u16::from(close.expect("a close frame with a code").code),
        1001
    );
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_engine_answers_engine_fenced_and_trades_nothing() {
    let path = cryptobot_integration_tests::temp_db_path();
    let app = TestApp::spawn_on(path.clone(), &[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("upgrade");
    socket
        .send(Message::text(
            json!({"type": "subscribe_ticker", "payload": {"symbol": "BTCUSDT"}}).to_string(),
        ))
        .await
        .unwrap();
    next_of_type(&mut socket, "ticker_update").await;
    // A successor engine's start on the same database takes the fence.
    let successor = tokio::task::spawn_blocking(move || {
        let storage = cryptobot_services::trading::Storage::open(path.to_str().unwrap()).unwrap();
        storage.acquire_fence().unwrap();
        storage
    })
    .await
    .unwrap();
    socket
        .send(Message::text(
            json!({"type": "manual_trade", "id": "f1", "payload": {"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01", "client_order_id": "fenced-1"}})
                .to_string(),
        ))
        .await
        .unwrap();
    let error = next_of_type(&mut socket, "error").await;
    assert_eq!(error["code"], "engine_fenced", "{error}");
    assert_eq!(error["id"], "f1");
    let stored = tokio::task::spawn_blocking(move || successor.load_trades().unwrap())
        .await
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
    app.stop().await;
}
