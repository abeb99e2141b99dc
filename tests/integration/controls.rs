//! Runtime controls against the real server: the auto-trading state over REST and WebSocket
//! (who and when, the `bot` channel with its snapshot, `seq` and resume, kept across a
//! restart), force exits of a position with the cancels they need, idempotency, the trade
//! scope and every error code documented for them.

use std::time::Duration;

use cryptobot_integration_tests::http::{self, Response};
use cryptobot_integration_tests::ws::{Socket, next_of_type};
use cryptobot_integration_tests::{READER, TRADER, TestApp};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn tokens() -> String {
    json!([
        {"name": "reader", "token": READER, "scopes": ["read"]},
        {"name": "trader", "token": TRADER, "scopes": ["read", "trade"]},
    ])
    .to_string()
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: &str) -> Response {
    let bearer = format!("Bearer {token}");
    let content_type = (!body.is_empty()).then_some("application/json");
    http::request_with_headers(
        app.addr,
        method,
        path,
        &[("Authorization", &bearer)],
        content_type,
        body.as_bytes(),
    )
    .await
}

async fn connect(app: &TestApp, token: &str) -> Socket {
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

async fn send(socket: &mut Socket, value: &Value) {
    socket
        .send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// The next direct reply (a frame with an `id`); pushes are skipped.
async fn reply(socket: &mut Socket) -> Value {
    let wait = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.expect("frame") {
                let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                if value.get("id").is_some() {
                    return value;
                }
            }
        }
        panic!("socket closed before a reply");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a reply within 10 s")
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

/// A sell limit far above the market: it rests, holding its quantity.
async fn resting_sell(app: &TestApp, quantity: &str) -> Value {
    let ticker = call(app, "GET", "/api/v1/tickers/BTCUSDT", READER, "")
        .await
        .json();
    let high = (dec(&ticker["price"]) * Decimal::TWO)
        .round_dp(2)
        .to_string();
    let body = json!({"symbol": "BTCUSDT", "side": "sell", "type": "limit",
        "quantity": quantity, "price": high});
    let placed = call(app, "POST", "/api/v1/orders", TRADER, &body.to_string()).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    placed.json()["order"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_pauses_and_resumes_with_who_and_when_across_a_restart() {
    let tokens = tokens();
    let auth = [
        ("CRYPTOBOT__AUTH__MODE", "token"),
        ("CRYPTOBOT__AUTH__TOKENS", tokens.as_str()),
    ];
    let app = TestApp::spawn(&auth).await;
    // TC0: the tests' configuration (trading.auto_trade = false), never changed; `read` reads it
    let initial = call(&app, "GET", "/api/v1/bot", READER, "").await;
    assert_eq!(initial.status, 200, "{}", initial.body);
    assert_eq!(
        initial.json(),
        json!({"state": "paused", "changed_at": null, "changed_by": null})
    );
    // TC1: changing it needs `trade`
    for path in ["/api/v1/bot/pause", "/api/v1/bot/resume"] {
        let refused = call(&app, "POST", path, READER, "").await;
        assert_eq!(
            (refused.status, refused.json()["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    // TC2: resume, stamped with the principal and the time
    let resumed = call(&app, "POST", "/api/v1/bot/resume", TRADER, "").await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let resumed = resumed.json();
    assert_eq!(resumed["state"], "running");
    assert_eq!(resumed["changed_by"], "trader");
    assert!(resumed["changed_at"].is_string(), "{resumed}");
    // TC3: idempotent: resuming a running bot is 200 with the state unchanged
    let again = call(&app, "POST", "/api/v1/bot/resume", TRADER, "").await;
    assert_eq!((again.status, again.json()), (200, resumed.clone()));
    let paused = call(&app, "POST", "/api/v1/bot/pause", TRADER, "")
        .await
        .json();
    assert_eq!(paused["state"], "paused");
    let storage = app.stop().await;
    // TC4: the state survives a restart
    let app = TestApp::spawn_on(storage, &auth).await;
    let after = call(&app, "GET", "/api/v1/bot", READER, "").await.json();
    assert_eq!(after, paused);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_force_exit_sells_everything_once_and_names_its_refusals() {
    let app = TestApp::spawn_with_tokens().await;
    let exit =
        |body: &'static str| call(&app, "POST", "/api/v1/positions/BTCUSDT/exit", TRADER, body);
    // TC0: nothing held (no body and a `null` body are both no options)
    for body in ["", "null"] {
        let none = exit(body).await;
        assert_eq!(
            (none.status, none.json()["code"].as_str()),
            (404, Some("no_position")),
            "{}",
            none.body
        );
    }
    let buy = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01"}).to_string();
    assert_eq!(
        call(&app, "POST", "/api/v1/trades", TRADER, &buy)
            .await
            .status,
        201
    );
    let resting = resting_sell(&app, "0.004").await;
    // TC1: refusals, each with its code, before anything is sold
    let cases: [(&str, &str, &str, u16, &str); 7] = [
        (
            "/api/v1/positions/BTCUSDT/exit",
            READER,
            "",
            403,
            "forbidden",
        ),
        (
            "/api/v1/positions/btc/exit",
            TRADER,
            "",
            400,
            "invalid_symbol",
        ),
        (
            "/api/v1/positions/DOGEUSDT/exit",
            TRADER,
            "",
            404,
            "unknown_symbol",
        ),
        (
            "/api/v1/positions/BTCUSDT/exit",
            TRADER,
            "{\"x\":1}",
            400,
            "invalid_payload",
        ),
        (
            "/api/v1/positions/BTCUSDT/exit",
            TRADER,
            "[]",
            400,
            "invalid_payload",
        ),
        (
            "/api/v1/positions/BTCUSDT/exit",
            TRADER,
            "{nope",
            400,
            "invalid_json",
        ),
        (
            "/api/v1/positions/BTCUSDT/exit",
            TRADER,
            "{\"client_order_id\":\"no spaces\"}",
            400,
            "invalid_client_order_id",
        ),
    ];
    let huge = format!("{{\"client_order_id\":\"{}\"}}", "a".repeat(17 * 1024));
    let too_large = call(
        &app,
        "POST",
        "/api/v1/positions/BTCUSDT/exit",
        TRADER,
        &huge,
    )
    .await;
    assert_eq!(
        (too_large.status, too_large.json()["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    for (path, token, body, status, code) in cases {
        let refused = call(&app, "POST", path, token, body).await;
        assert_eq!(
            (refused.status, refused.json()["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {}",
            refused.body
        );
    }
    // TC2: the whole 0.01 in one trade, the resting sell canceled first
    let first = exit("{\"client_order_id\":\"fx-rest-1\"}").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();
    assert_eq!(first["trade"]["quantity"], "0.01");
    assert_eq!(first["trade"]["side"], "sell");
    assert_eq!(first["trade"]["origin"], "force_exit");
    assert_eq!(first["trade"]["client_order_id"], "fx-rest-1");
    assert_eq!(first["replayed"], false);
    assert_eq!(first["idempotent"], true);
    let canceled = first["canceled_orders"].as_array().unwrap();
    assert_eq!(canceled.len(), 1, "{first}");
    assert_eq!(canceled[0]["id"], resting["id"]);
    assert_eq!(canceled[0]["status"], "canceled");
    let portfolio = call(&app, "GET", "/api/v1/portfolio", READER, "")
        .await
        .json();
    assert_eq!(portfolio["positions"], json!([]), "{portfolio}");
    // TC3: the same key again answers the first exit, 200
    let replay = exit("{\"client_order_id\":\"fx-rest-1\"}").await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    let replay = replay.json();
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["trade"], first["trade"]);
    assert_eq!(replay["canceled_orders"], json!([]));
    // TC4: a key another command used
    let manual = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01",
        "client_order_id": "m-rest-1"})
    .to_string();
    assert_eq!(
        call(&app, "POST", "/api/v1/trades", TRADER, &manual)
            .await
            .status,
        201
    );
    let taken = exit("{\"client_order_id\":\"m-rest-1\"}").await;
    assert_eq!(
        (taken.status, taken.json()["code"].as_str()),
        (409, Some("duplicate_client_order_id"))
    );
    // TC5: without a key it sells, and says it is not idempotent
    let plain = exit("{}").await;
    assert_eq!(plain.status, 201, "{}", plain.body);
    assert_eq!(plain.json()["idempotent"], false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_controls_reach_every_dashboard_and_resume_exactly() {
    let app = TestApp::spawn_with_tokens().await;
    let mut operator = connect(&app, TRADER).await;
    let mut watcher = connect(&app, READER).await;
    // TC0: subscribing to `bot` sends the state as a snapshot
    send(
        &mut watcher,
        &json!({"type": "subscribe", "id": 1, "payload": {"channels": ["bot"]}}),
    )
    .await;
    let ack = next_of_type(&mut watcher, "subscribed").await;
    let epoch = ack["epoch"].as_u64().unwrap();
    let snapshot = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(snapshot["channel"], "bot");
    assert_eq!(snapshot["snapshot"], true);
    assert_eq!(snapshot["seq"], 0);
    assert_eq!(snapshot["payload"]["state"], "paused");
    // TC1: a read-only token cannot change it, whatever the payload
    for kind in ["pause_trading", "resume_trading", "force_exit"] {
        send(
            &mut watcher,
            &json!({"type": kind, "id": kind, "payload": "garbage"}),
        )
        .await;
        let refused = reply(&mut watcher).await;
        assert_eq!(refused["code"], "forbidden", "{kind}: {refused}");
    }
    // TC2: resume: the reply to the sender, the event to every subscriber of `bot`
    send(
        &mut operator,
        &json!({"type": "resume_trading", "id": "r1"}),
    )
    .await;
    let resumed = reply(&mut operator).await;
    assert_eq!(resumed["type"], "bot_state", "{resumed}");
    assert_eq!(resumed["id"], "r1");
    assert_eq!(resumed["payload"]["state"], "running");
    assert_eq!(resumed["payload"]["changed_by"], "trader");
    let pushed = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(
        (pushed["seq"].as_u64(), pushed.get("snapshot")),
        (Some(1), None)
    );
    assert_eq!(pushed["payload"], resumed["payload"]);
    send(&mut operator, &json!({"type": "pause_trading", "id": "p1"})).await;
    assert_eq!(reply(&mut operator).await["payload"]["state"], "paused");
    let pushed = next_of_type(&mut watcher, "bot_state_update").await;
    assert_eq!(pushed["seq"], 2);
    // TC3: force_exit: its codes, then the whole position as one trade
    let refusals = [
        (json!({"symbol": "BTCUSDT"}), "no_position"),
        (json!({"symbol": "btc"}), "invalid_symbol"),
        (json!({"symbol": "DOGEUSDT"}), "unknown_symbol"),
        (
            json!({"symbol": "BTCUSDT", "client_order_id": ""}),
            "invalid_client_order_id",
        ),
        (json!({"symbol": "BTCUSDT", "extra": 1}), "invalid_payload"),
        (json!({}), "invalid_payload"),
    ];
    for (n, (payload, code)) in refusals.into_iter().enumerate() {
        send(
            &mut operator,
            &json!({"type": "force_exit", "id": n, "payload": payload}),
        )
        .await;
        let refused = reply(&mut operator).await;
        assert_eq!(refused["code"], code, "{refused}");
    }
    send(
        &mut operator,
        &json!({"type": "manual_trade", "id": "b1", "payload":
        {"symbol": "BTCUSDT", "side": "buy", "quantity": "0.02"}}),
    )
    .await;
    assert_eq!(reply(&mut operator).await["type"], "trade_executed");
    let resting = resting_sell(&app, "0.01").await;
    send(
        &mut operator,
        &json!({"type": "force_exit", "id": "x1", "payload":
        {"symbol": "BTCUSDT", "client_order_id": "fx-ws-1"}}),
    )
    .await;
    let exited = reply(&mut operator).await;
    assert_eq!(exited["type"], "position_exited", "{exited}");
    assert_eq!(exited["payload"]["trade"]["quantity"], "0.02");
    assert_eq!(exited["payload"]["trade"]["origin"], "force_exit");
    assert_eq!(exited["payload"]["canceled_orders"][0]["id"], resting["id"]);
    assert_eq!(exited["payload"]["replayed"], false);
    assert!(exited["payload"].get("note").is_none(), "{exited}");
    // The buy's notification comes first; the exit's follows it.
    let mut origins = Vec::new();
    while origins.len() < 2 {
        let notified = next_of_type(&mut watcher, "trade_notification").await;
        origins.push(notified["payload"]["origin"].as_str().unwrap().to_owned());
    }
    assert_eq!(origins, ["manual", "force_exit"]);
    send(
        &mut operator,
        &json!({"type": "force_exit", "id": "x2", "payload":
        {"symbol": "BTCUSDT", "client_order_id": "fx-ws-1"}}),
    )
    .await;
    let replayed = reply(&mut operator).await;
    assert_eq!(replayed["payload"]["replayed"], true);
    assert_eq!(replayed["payload"]["trade"], exited["payload"]["trade"]);
    // Without a key it sells too, and the reply says a retry would sell again.
    send(
        &mut operator,
        &json!({"type": "manual_trade", "id": "b2", "payload":
        {"symbol": "ETHUSDT", "side": "buy", "quantity": "0.01"}}),
    )
    .await;
    assert_eq!(reply(&mut operator).await["type"], "trade_executed");
    send(
        &mut operator,
        &json!({"type": "force_exit", "id": "x3", "payload": {"symbol": "ETHUSDT"}}),
    )
    .await;
    let unkeyed = reply(&mut operator).await;
    assert_eq!(unkeyed["type"], "position_exited", "{unkeyed}");
    assert!(
        unkeyed["payload"]["note"]
            .as_str()
            .is_some_and(|note| note.contains("not idempotent")),
        "{unkeyed}"
    );
    // TC4: a reconnect resumes `bot` exactly from its history ...
    let mut back = connect(&app, READER).await;
    send(
        &mut back,
        &json!({"type": "resume", "id": 2, "payload":
        {"epoch": epoch, "last_seq": {"bot": 1}}}),
    )
    .await;
    let resumed = next_of_type(&mut back, "resumed").await;
    assert_eq!(resumed["recovered"]["bot"], true);
    let missed = next_of_type(&mut back, "bot_state_update").await;
    assert_eq!(
        (missed["seq"].as_u64(), missed["payload"]["state"].as_str()),
        (Some(2), Some("paused"))
    );
    // ... and gets a snapshot when it cannot
    let mut other = connect(&app, READER).await;
    send(
        &mut other,
        &json!({"type": "resume", "id": 3, "payload":
        {"epoch": epoch + 1, "last_seq": {"bot": 1}}}),
    )
    .await;
    let resumed = next_of_type(&mut other, "resumed").await;
    assert_eq!(resumed["recovered"]["bot"], false);
    let snapshot = next_of_type(&mut other, "bot_state_update").await;
    assert_eq!(
        (snapshot["seq"].as_u64(), snapshot["snapshot"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(snapshot["payload"]["state"], "paused");
    app.stop().await;
}
