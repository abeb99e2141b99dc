//! Orders with a lifecycle against the real server: REST and WebSocket commands, the `orders`
//! channel with its snapshot, `seq` and resume, idempotency across both paths, reservations in
//! the portfolio, the trade scope.

use std::time::Duration;

use cryptobot_integration_tests::http::{self, Response};
use cryptobot_integration_tests::ws::{Socket, next_of_type};
use cryptobot_integration_tests::{READER, TRADER, TestApp};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
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

async fn delete(app: &TestApp, path: &str) -> Response {
    http::request(app.addr, "DELETE", path, None, b"").await
}

/// A limit price far from the market either way: `0.5` of the last price rests for a buy,
/// `2` of it crosses at once.
async fn price_times(app: &TestApp, symbol: &str, factor: &str) -> String {
    let ticker = app.get(&format!("/api/v1/tickers/{symbol}")).await.json();
    let factor: Decimal = factor.parse().unwrap();
    (dec(&ticker["price"]) * factor).round_dp(2).to_string()
}

fn limit_buy(price: &str, quantity: &str, key: Option<&str>) -> Value {
    let mut body = json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit",
        "quantity": quantity, "price": price});
    if let Some(key) = key {
        body["client_order_id"] = json!(key);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_places_lists_cancels_and_reserves() {
    let app = TestApp::spawn(&[]).await;
    let low = price_times(&app, "BTCUSDT", "0.5").await;
    // TC0: a resting buy: 201, new, its cost plus fee reserved
    let placed = app
        .post_json("/api/v1/orders", &limit_buy(&low, "0.01", None))
        .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let body = placed.json();
    assert_eq!(
        (body["replayed"].clone(), body["idempotent"].clone()),
        (json!(false), json!(false))
    );
    let order = body["order"].clone();
    assert_eq!(order["status"], "new");
    assert_eq!(order["type"], "limit");
    assert_eq!(order["time_in_force"], "GTC");
    let notional = (dec(&json!(low)) * Decimal::new(1, 2)).round_dp(8);
    let fee = (notional * Decimal::new(1, 3)).round_dp(8);
    assert_eq!(dec(&order["reserved_cash"]), notional + fee);
    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(dec(&portfolio["cash"]), Decimal::from(10_000));
    assert_eq!(dec(&portfolio["reserved"]["cash"]), notional + fee);
    assert_eq!(
        dec(&portfolio["reserved"]["available_cash"]),
        Decimal::from(10_000) - notional - fee
    );
    // TC1: listed as open
    let open = app.get("/api/v1/orders?status=open").await.json();
    assert_eq!(open.as_array().unwrap().len(), 1);
    assert_eq!(open[0]["id"], order["id"]);
    // TC2: a crossing limit fills at once, at the ask or better, and its trade is listed
    let high = price_times(&app, "BTCUSDT", "2").await;
    let filled = app
        .post_json(
            "/api/v1/orders",
            &limit_buy(&high, "0.001", Some("rest-fill")),
        )
        .await;
    assert_eq!(filled.status, 201, "{}", filled.body);
    let filled = filled.json()["order"].clone();
    assert_eq!(filled["status"], "filled");
    let trades = app
        .get("/api/v1/trades?client_order_id=rest-fill")
        .await
        .json();
    assert_eq!(trades[0]["id"], filled["trade_id"]);
    assert!(dec(&trades[0]["price"]) < dec(&json!(high)));
    // TC3: paging with a Link header, filters
    let page = app.get("/api/v1/orders?limit=1").await;
    assert_eq!(page.json()[0]["id"], filled["id"]);
    let link = page.header("link").expect("a next link").to_owned();
    assert_eq!(
        link,
        format!(
            "</api/v1/orders?limit=1&before_id={}>; rel=\"next\"",
            filled["id"]
        )
    );
    let filled_only = app.get("/api/v1/orders?status=filled").await.json();
    assert_eq!(filled_only.as_array().unwrap().len(), 1);
    // TC4: cancel by id; again is 409; unknown is 404
    let path = format!("/api/v1/orders/{}", order["id"]);
    let canceled = delete(&app, &path).await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.json()["status"], "canceled");
    assert_eq!(dec(&canceled.json()["reserved_cash"]), Decimal::ZERO);
    let again = delete(&app, &path).await;
    assert_eq!(
        (again.status, again.json()["code"].as_str()),
        (409, Some("order_not_open"))
    );
    let unknown = delete(&app, "/api/v1/orders/999999").await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (404, Some("unknown_order"))
    );
    // Ids beyond SQLite's i64 name no order either (not a 500 storage_error from the i64
    // conversion); one beyond u64 does not parse.
    for id in ["9223372036854775808", "18446744073709551615"] {
        let unknown = delete(&app, &format!("/api/v1/orders/{id}")).await;
        assert_eq!(
            (unknown.status, unknown.json()["code"].as_str()),
            (404, Some("unknown_order")),
            "{id}: {}",
            unknown.body
        );
    }
    let too_big = delete(&app, "/api/v1/orders/18446744073709551616").await;
    assert_eq!(
        (too_big.status, too_big.json()["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let bad_path = delete(&app, "/api/v1/orders/abc").await;
    assert_eq!(
        (bad_path.status, bad_path.json()["code"].as_str()),
        (400, Some("invalid_path"))
    );
    // TC5: cancel by key, and cancel all of a symbol
    for key in ["k-a", "k-b"] {
        let placed = app
            .post_json("/api/v1/orders", &limit_buy(&low, "0.01", Some(key)))
            .await;
        assert_eq!(placed.status, 201, "{}", placed.body);
    }
    let by_key = delete(&app, "/api/v1/orders/by-client-id/k-a").await;
    assert_eq!(by_key.json()["client_order_id"], "k-a");
    let all = delete(&app, "/api/v1/orders?symbol=BTCUSDT").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["orders"].as_array().unwrap().len(), 1);
    assert_eq!(all["orders"][0]["client_order_id"], "k-b");
    let none = delete(&app, "/api/v1/orders").await.json();
    assert_eq!(none, json!({"orders": []}));
    let unknown_symbol = delete(&app, "/api/v1/orders?symbol=DOGEUSDT").await;
    assert_eq!(
        (
            unknown_symbol.status,
            unknown_symbol.json()["code"].as_str()
        ),
        (404, Some("unknown_symbol"))
    );
    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(dec(&portfolio["reserved"]["cash"]), Decimal::ZERO);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_optional_field_is_the_same_as_left_out() {
    // docs/api.md and docs/openapi.json: `null` for an optional field of POST /orders and
    // POST /trades is the field left out.
    let app = TestApp::spawn(&[]).await;
    let low = price_times(&app, "BTCUSDT", "0.5").await;
    let mut body = limit_buy(&low, "0.01", None);
    for field in [
        "client_order_id",
        "amount",
        "stop_price",
        "time_in_force",
        "post_only",
    ] {
        body[field] = Value::Null;
    }
    let placed = app.post_json("/api/v1/orders", &body).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    let placed = placed.json();
    assert_eq!(
        (
            &placed["order"]["time_in_force"],
            &placed["order"]["post_only"],
            &placed["idempotent"]
        ),
        (&json!("GTC"), &json!(false), &json!(false))
    );
    let trade = app
        .post_json(
            "/api/v1/trades",
            &json!({"symbol": "BTCUSDT", "side": "buy", "amount": "100", "quantity": null,
                    "client_order_id": null}),
        )
        .await;
    assert_eq!(trade.status, 201, "{}", trade.body);
    assert_eq!(trade.json()["idempotent"], false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_bad_orders_with_their_codes() {
    let app = TestApp::spawn(&[]).await;
    let low = price_times(&app, "BTCUSDT", "0.5").await;
    let high = price_times(&app, "BTCUSDT", "2").await;
    let with = |field: &str, value: Value| {
        let mut body = limit_buy(&low, "0.01", None);
        body[field] = value;
        body
    };
    let mut no_price = limit_buy(&low, "0.01", None);
    no_price.as_object_mut().unwrap().remove("price");
    let cases = [
        // TC0: shape, grammar, the type's fields
        (with("type", json!("iceberg")), 400, "invalid_payload"),
        (with("price", json!(1)), 400, "invalid_payload"),
        (with("price", json!("1e3")), 400, "invalid_decimal"),
        (with("price", json!("0")), 422, "invalid_size"),
        (no_price, 422, "invalid_order"),
        (with("stop_price", json!("5")), 422, "invalid_order"),
        (with("time_in_force", json!("DAY")), 400, "invalid_payload"),
        (with("symbol", json!("DOGEUSDT")), 404, "unknown_symbol"),
        // TC1: funds and size
        (with("quantity", json!("100")), 422, "insufficient_funds"),
        (
            with("quantity", json!("0.00000001")),
            422,
            "order_too_small",
        ),
        (
            json!({"symbol": "BTCUSDT", "side": "sell", "type": "limit", "quantity": "1",
                   "price": high}),
            422,
            "insufficient_position",
        ),
        // TC2: post-only that would cross
        (
            json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.001",
                   "price": high, "post_only": true}),
            409,
            "post_only_would_cross",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.post_json("/api/v1/orders", &body).await;
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (status, Some(code)),
            "{body}: {}",
            response.body
        );
    }
    // TC3: listing parameters
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("status=done", "invalid_query"),
        ("page=2", "invalid_query"),
        ("symbol=btc", "invalid_symbol"),
    ] {
        let response = app.get(&format!("/api/v1/orders?{query}")).await;
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    // Nothing was placed.
    assert_eq!(app.get("/api/v1/orders").await.json(), json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_order_id_across_rest_and_websocket() {
    let app = TestApp::spawn(&[("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "0")]).await;
    let low = price_times(&app, "BTCUSDT", "0.5").await;
    let body = limit_buy(&low, "0.01", Some("both-1"));
    let first = app.post_json("/api/v1/orders", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let mut ws = connect(&app.ws_url()).await;
    // TC0: the same order over the WebSocket is replayed: the same order, nothing new
    send(
        &mut ws,
        &json!({"type": "place_order", "id": 1, "payload": body}),
    )
    .await;
    let replayed = reply(&mut ws).await;
    assert_eq!(replayed["type"], "order_placed", "{replayed}");
    assert_eq!(replayed["payload"]["replayed"], true);
    assert_eq!(replayed["payload"]["order"], first.json()["order"]);
    assert!(replayed["payload"].get("note").is_none());
    // TC1: and over REST again, 200
    let again = app.post_json("/api/v1/orders", &body).await;
    assert_eq!(
        (again.status, again.json()["replayed"].clone()),
        (200, json!(true))
    );
    // TC2: another order under the key, on either path, is a conflict
    let other = limit_buy(&low, "0.02", Some("both-1"));
    send(
        &mut ws,
        &json!({"type": "place_order", "id": 2, "payload": other}),
    )
    .await;
    assert_eq!(reply(&mut ws).await["code"], "duplicate_client_order_id");
    let conflict = app.post_json("/api/v1/orders", &other).await;
    assert_eq!(conflict.status, 409);
    // TC3: trades and orders share the keys
    let trade = json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01",
        "client_order_id": "both-1"});
    send(
        &mut ws,
        &json!({"type": "manual_trade", "id": 3, "payload": trade}),
    )
    .await;
    assert_eq!(reply(&mut ws).await["code"], "duplicate_client_order_id");
    let orders = app.get("/api/v1/orders").await.json();
    assert_eq!(orders.as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/v1/trades").await.json(), json!([]));
    // TC4: without a key the reply says it is not idempotent
    send(
        &mut ws,
        &json!({"type": "place_order", "id": 4, "payload": limit_buy(&low, "0.01", None)}),
    )
    .await;
    let placed = reply(&mut ws).await;
    assert_eq!(placed["payload"]["order"]["status"], "new");
    assert!(
        placed["payload"]["note"]
            .as_str()
            .unwrap()
            .contains("not idempotent")
    );
    // TC5: cancel over the WebSocket by key and by id
    send(
        &mut ws,
        &json!({"type": "cancel_order", "id": 5, "payload": {"client_order_id": "both-1"}}),
    )
    .await;
    let canceled = reply(&mut ws).await;
    assert_eq!(
        (
            canceled["type"].as_str(),
            canceled["payload"]["status"].as_str()
        ),
        (Some("order_canceled"), Some("canceled"))
    );
    let id = placed["payload"]["order"]["id"].clone();
    send(
        &mut ws,
        &json!({"type": "cancel_order", "id": 6, "payload": {"order_id": id}}),
    )
    .await;
    assert_eq!(reply(&mut ws).await["payload"]["status"], "canceled");
    send(
        &mut ws,
        &json!({"type": "cancel_order", "id": 7, "payload": {"order_id": id}}),
    )
    .await;
    assert_eq!(reply(&mut ws).await["code"], "order_not_open");
    // TC6: list_orders and cancel_all_orders
    send(
        &mut ws,
        &json!({"type": "list_orders", "id": 8, "payload": {"status": "canceled", "limit": 1}}),
    )
    .await;
    let listed = reply(&mut ws).await;
    assert_eq!(listed["type"], "orders");
    assert_eq!(listed["payload"]["orders"][0]["id"], id);
    assert_eq!(listed["payload"]["more"], true);
    send(&mut ws, &json!({"type": "cancel_all_orders", "id": 9})).await;
    let all = reply(&mut ws).await;
    assert_eq!(
        all,
        json!({"type": "orders_canceled", "payload": {"orders": []}, "id": 9})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_channel_has_a_snapshot_seq_and_resume() {
    let app = TestApp::spawn(&[]).await;
    let low = price_times(&app, "BTCUSDT", "0.5").await;
    let resting = app
        .post_json("/api/v1/orders", &limit_buy(&low, "0.01", Some("snap-1")))
        .await
        .json()["order"]
        .clone();
    let mut ws = connect(&app.ws_url()).await;
    send(
        &mut ws,
        &json!({"type": "subscribe", "payload": {"channels": ["orders"]}}),
    )
    .await;
    let ack = next_of_type(&mut ws, "subscribed").await;
    assert!(
        ack["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("orders"))
    );
    let epoch = ack["epoch"].clone();
    // TC0: the open orders, as a snapshot at the channel's last seq (one `new` so far)
    let snapshot = next_of_type(&mut ws, "open_orders").await;
    assert_eq!(snapshot["channel"], "orders");
    assert_eq!(
        (snapshot["seq"].clone(), snapshot["snapshot"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(snapshot["payload"]["orders"], json!([resting]));
    // TC1: a fill: order_update `new` then `filled` on `orders`, and the trade on `trades`
    let high = price_times(&app, "BTCUSDT", "2").await;
    let filled = app
        .post_json("/api/v1/orders", &limit_buy(&high, "0.001", None))
        .await
        .json()["order"]
        .clone();
    let new = next_of_type(&mut ws, "order_update").await;
    assert_eq!(
        (new["seq"].clone(), new["payload"]["event"].clone()),
        (json!(2), json!("new"))
    );
    assert_eq!(new["payload"]["order"]["id"], filled["id"]);
    let trade = next_of_type(&mut ws, "trade_notification").await;
    assert_eq!(trade["payload"]["id"], filled["trade_id"]);
    let done = next_of_type(&mut ws, "order_update").await;
    assert_eq!(
        (done["seq"].clone(), done["payload"]["event"].clone()),
        (json!(3), json!("filled"))
    );
    assert_eq!(done["payload"]["order"], filled);
    drop(ws);
    // TC2: a cancel while disconnected is replayed exactly on resume
    let canceled = delete(&app, "/api/v1/orders/by-client-id/snap-1")
        .await
        .json();
    let mut ws = connect(&app.ws_url()).await;
    send(
        &mut ws,
        &json!({"type": "resume", "payload": {"epoch": epoch, "last_seq": {"orders": 3}}}),
    )
    .await;
    let resumed = next_of_type(&mut ws, "resumed").await;
    assert_eq!(resumed["recovered"], json!({"orders": true}));
    let missed = next_of_type(&mut ws, "order_update").await;
    assert_eq!(
        (missed["seq"].clone(), missed["payload"]["event"].clone()),
        (json!(4), json!("canceled"))
    );
    assert_eq!(missed["payload"]["order"], canceled);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_commands_need_the_trade_scope() {
    let app = TestApp::spawn_with_tokens().await;
    let order = json!({"symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.01",
        "price": "100"});
    let call = |method: &'static str, path: &'static str, token: &'static str| {
        let body = order.to_string();
        let bearer = format!("Bearer {token}");
        let addr = app.addr;
        async move {
            http::request_with_headers(
                addr,
                method,
                path,
                &[("Authorization", &bearer)],
                Some("application/json"),
                body.as_bytes(),
            )
            .await
        }
    };
    // TC0: REST: reading needs `read`, changing needs `trade`
    assert_eq!(call("GET", "/api/v1/orders", READER).await.status, 200);
    for (method, path) in [
        ("POST", "/api/v1/orders"),
        ("DELETE", "/api/v1/orders"),
        ("DELETE", "/api/v1/orders/1"),
        ("DELETE", "/api/v1/orders/by-client-id/a"),
    ] {
        let response = call(method, path, READER).await;
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
    }
    let placed = call("POST", "/api/v1/orders", TRADER).await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    // TC1: WebSocket: the same split, checked before the payload
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {READER}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for (n, kind) in ["place_order", "cancel_order", "cancel_all_orders"]
        .into_iter()
        .enumerate()
    {
        send(
            &mut ws,
            &json!({"type": kind, "id": n, "payload": "garbage"}),
        )
        .await;
        let refused = reply(&mut ws).await;
        assert_eq!(refused["code"], "forbidden", "{kind}: {refused}");
    }
    send(&mut ws, &json!({"type": "list_orders", "id": 9})).await;
    let listed = reply(&mut ws).await;
    assert_eq!(listed["payload"]["orders"].as_array().unwrap().len(), 1);
    app.stop().await;
}
