//! Nothing lost, end to end on the real server: idempotent commands across WS and REST, resume
//! after reconnect, and the shutdown notice before 1001.

use std::time::Duration;

use cryptobot_integration_tests::TestApp;
use cryptobot_integration_tests::ws::{Socket, next_of_type};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_manual_trade_on_two_sockets_and_rest_executes_once() {
    let app = TestApp::spawn(&[]).await;
    let url = app.ws_url();
    for round in 0..5 {
        let coid = format!("dup-{round}");
        let order = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.001", "client_order_id": coid});
        let over_ws = |order: Value| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut socket = connect(&url).await;
                send(
                    &mut socket,
                    json!({"type": "manual_trade", "id": 1, "payload": order}),
                )
                .await;
                let reply = next_of_type(&mut socket, "trade_executed").await;
                (
                    reply["payload"]["trade"]["id"].clone(),
                    reply["payload"]["replayed"].clone(),
                )
            })
        };
        let (a, b) = (over_ws(order.clone()), over_ws(order.clone()));
        let rest = app.post_json("/api/v1/trades", &order).await;
        assert!(matches!(rest.status, 200 | 201), "{}", rest.body);
        let rest = rest.json();
        let results = [
            a.await.unwrap(),
            b.await.unwrap(),
            (rest["trade"]["id"].clone(), rest["replayed"].clone()),
        ];
        assert!(
            results.iter().all(|(id, _)| *id == results[0].0),
            "one trade for every path: {results:?}"
        );
        let fresh = results
            .iter()
            .filter(|(_, replayed)| *replayed == false)
            .count();
        assert_eq!(fresh, 1, "exactly one execution: {results:?}");
    }
    let trades = app.get("/api/v1/trades?limit=100").await.json();
    assert_eq!(trades.as_array().unwrap().len(), 5, "{trades}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticker_resumed_after_a_reconnect_gets_the_newest_then_no_gap_and_no_duplicate() {
    let app = TestApp::spawn(&[]).await;
    let url = format!("{}?welcome=1", app.ws_url());
    let mut socket = connect(&url).await;
    let epoch = next_of_type(&mut socket, "welcome").await["epoch"].clone();
    send(
        &mut socket,
        json!({"type": "subscribe", "payload": {"channels": ["ticker:BTCUSDT"]}}),
    )
    .await;
    let ack = next_of_type(&mut socket, "subscribed").await;
    assert_eq!(ack["epoch"], epoch);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let frame = next_of_type(&mut socket, "ticker_update").await;
        if frame.get("snapshot").is_none() {
            seen.push(frame["seq"].as_u64().unwrap());
        }
    }
    drop(socket);
    // Ticks keep coming (20 per second) while the client is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut socket = connect(&url).await;
    assert_eq!(next_of_type(&mut socket, "welcome").await["epoch"], epoch);
    let last = *seen.last().unwrap();
    send(
        &mut socket,
        json!({"type": "resume", "payload": {"epoch": epoch, "last_seq": {"ticker:BTCUSDT": last}}}),
    )
    .await;
    let ack = next_of_type(&mut socket, "resumed").await;
    assert_eq!(ack["recovered"]["ticker:BTCUSDT"], true, "{ack}");
    let mut resumed = Vec::new();
    while resumed.len() < 15 {
        resumed.push(
            next_of_type(&mut socket, "ticker_update").await["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    // Tickers are conflated by contract: the newest of the ~10 missed ticks, not all of them.
    let first = resumed[0];
    assert!(
        first > last + 1,
        "a replay of every missed tick: {last} then {resumed:?}"
    );
    assert_eq!(
        resumed,
        (first..first + 15).collect::<Vec<_>>(),
        "then live: no gap, no duplicate"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_shutdown_announces_itself_before_going_away() {
    let app = TestApp::spawn(&[]).await;
    let mut socket = connect(&app.ws_url()).await;
    let stopping = tokio::spawn(app.stop());
    let mut last = None;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame,
                Ok(Message::Text(text)) => {
                    last = Some(serde_json::from_str::<Value>(&text).unwrap())
                }
                _ => {}
            }
        }
        None
    })
    .await
    .expect("close frame within 5 s");
    assert_eq!(u16::from(close.expect("a close code").code), 1001);
    let notice = last.expect("a frame before the close");
    assert_eq!(notice["type"], "server_shutdown", "{notice}");
    assert!(notice["epoch"].as_u64().unwrap() > 0);
    stopping.await.unwrap();
}
