//! `market.source = "binance"` end to end: the real application against a fake exchange on
//! 127.0.0.1 speaking Binance's combined-stream format.

use std::net::SocketAddr;
use std::time::Duration;

use cryptobot_integration_tests::{TestApp, eventually};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Hang guard for every wait; never a performance assertion.
const LIMIT: Duration = Duration::from_secs(10);

/// Starts a fake exchange that answers every SUBSCRIBE and then streams a BTCUSDT ticker with an
/// eight-decimal price every 50 ms until the connection ends.
async fn fake_exchange() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let mut ticks = tokio::time::interval(Duration::from_millis(50));
                loop {
                    tokio::select! {
                        received = ws.next() => match received {
                            Some(Ok(Message::Text(text))) => {
                                let request: serde_json::Value =
                                    serde_json::from_str(text.as_str()).unwrap_or_default();
                                let reply = serde_json::json!({"result": null, "id": request["id"]});
                                if ws.send(Message::text(reply.to_string())).await.is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                        _ = ticks.tick() => {
                            let frame = r#"{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1700000000123,"s":"BTCUSDT","P":"1.25","c":"67123.45678901","b":"67123.40000000","a":"67123.50000000","v":"9876.54321000"}}"#;
                            if ws.send(Message::text(frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_prices_reach_the_rest_api_and_health_reports_the_feed() {
    let exchange = fake_exchange().await;
    let url = format!("ws://{exchange}");
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__MARKET__SOURCE", "binance"),
        ("CRYPTOBOT__MARKET__SYMBOLS", "BTCUSDT,ETHUSDT"),
        ("CRYPTOBOT__MARKET__BINANCE__WS_URL", &url),
        ("CRYPTOBOT__MARKET__BINANCE__RECONNECT_MIN_MS", "10"),
    ])
    .await;
    let tickers = eventually(LIMIT, "a BTCUSDT price from the exchange", || async {
        let body = app.get("/api/v1/tickers").await.json();
        (body.as_array().is_some_and(|t| !t.is_empty())).then_some(body)
    })
    .await;
    // Exactly the exchange's decimals; ETHUSDT never got an update.
    assert_eq!(tickers.as_array().unwrap().len(), 1);
    assert_eq!(tickers[0]["symbol"], "BTCUSDT");
    assert_eq!(tickers[0]["price"], "67123.45678901");
    assert_eq!(tickers[0]["bid"], "67123.40000000");
    assert_eq!(tickers[0]["volume_24h"], "9876.54321000");
    let eth = app.get("/api/v1/tickers/ETHUSDT").await;
    assert_eq!(eth.json()["code"], "no_price", "{}", eth.body);

    let health = app.get("/api/v1/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let market = &health.json()["market"];
    assert_eq!(market["source"], "binance");
    assert_eq!(market["feed"]["connected"], true);
    assert_eq!(market["feed"]["stale"], false);
    assert!(market["feed"]["last_update_age_ms"].is_u64(), "{market}");
    assert_eq!(market["feed"]["reconnects"], 0);
    assert_eq!(market["feed"]["malformed_messages"], 0);

    let metrics = app.get("/metrics").await.body;
    assert!(
        metrics.contains("cryptobot_market_feed_connected{source=\"binance\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("cryptobot_market_feed_reconnects_total{source=\"binance\"} 0\n"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_stays_the_default_and_reports_a_connected_feed() {
    let app = TestApp::spawn(&[]).await;
    let health = app.get("/api/v1/health").await.json();
    assert_eq!(health["market"]["source"], "simulated");
    assert_eq!(health["market"]["feed"]["connected"], true);
    app.stop().await;
}
