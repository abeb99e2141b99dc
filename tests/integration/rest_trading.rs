//! Manual trading over REST: execution, validation, idempotency, positions.

use cryptobot_integration_tests::TestApp;
use cryptobot_integration_tests::http;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_shows_in_trades_and_portfolio() {
    let app = TestApp::spawn(&[]).await;
    let response = app
        .post_json(
            "/api/v1/trades",
            &json!({"symbol": "ETHUSDT", "side": "buy", "amount": "500"}),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    let body = response.json();
    assert_eq!(body["replayed"], false);
    assert_eq!(body["idempotent"], false);
    let trade = &body["trade"];
    assert_eq!(trade["symbol"], "ETHUSDT");
    assert_eq!(trade["side"], "buy");
    let spent = dec(&trade["notional"]) + dec(&trade["fee"]);
    assert!(
        spent <= Decimal::from(500) && spent > Decimal::from(499),
        "spent {spent}"
    );

    let trades = app.get("/api/v1/trades?limit=10").await.json();
    assert_eq!(trades.as_array().unwrap().len(), 1);
    assert_eq!(trades[0]["id"], trade["id"]);

    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(dec(&portfolio["cash"]), Decimal::from(10_000) - spent);
    assert_eq!(portfolio["positions"][0]["symbol"], "ETHUSDT");
    assert_eq!(
        dec(&portfolio["positions"][0]["quantity"]),
        dec(&trade["quantity"])
    );
    // The books balance: cash + cost basis = initial cash + realized PnL.
    let cost = dec(&portfolio["positions"][0]["cost_basis"]);
    assert_eq!(
        dec(&portfolio["cash"]) + cost,
        Decimal::from(10_000) + dec(&portfolio["realized_pnl"])
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_order_id_makes_a_trade_idempotent() {
    let app = TestApp::spawn(&[]).await;
    let order =
        json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.01", "client_order_id": "it-1"});
    let first = app.post_json("/api/v1/trades", &order).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = app.post_json("/api/v1/trades", &order).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["replayed"], true);
    assert_eq!(again.json()["trade"], first.json()["trade"]);
    // TC1: the same key for a different order is a conflict, and nothing trades
    let other =
        json!({"symbol": "BTCUSDT", "side": "buy", "quantity": "0.02", "client_order_id": "it-1"});
    let conflict = app.post_json("/api/v1/trades", &other).await;
    assert_eq!(
        (conflict.status, conflict.json()["code"].as_str()),
        (409, Some("duplicate_client_order_id"))
    );
    assert_eq!(
        app.get("/api/v1/trades")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trade_requests_get_json_errors_and_execute_nothing() {
    let app = TestApp::spawn(&[]).await;
    // (case, body, content type, expected status, expected code)
    type Case<'a> = (&'a str, &'a [u8], Option<&'a str>, u16, &'a str);
    let cases: [Case; 12] = [
        // TC10: an array where the object goes (serde alone reads it as the fields in order)
        (
            "array body",
            br#"["BTCUSDT","buy",null,"10",null]"#,
            Some("application/json"),
            400,
            "invalid_payload",
        ),
        (
            "short array body",
            b"[null, null]",
            Some("application/json"),
            400,
            "invalid_payload",
        ),
        // TC0: not JSON
        (
            "not json",
            b"{nope",
            Some("application/json"),
            400,
            "invalid_json",
        ),
        // TC1: wrong type for a field
        (
            "float quantity",
            br#"{"symbol":"BTCUSDT","side":"buy","quantity":0.1}"#,
            Some("application/json"),
            400,
            "invalid_payload",
        ),
        // TC2: neither size
        (
            "no size",
            br#"{"symbol":"BTCUSDT","side":"buy"}"#,
            Some("application/json"),
            400,
            "invalid_payload",
        ),
        // TC3: bad symbol
        (
            "bad symbol",
            br#"{"symbol":"btc","side":"buy","amount":"10"}"#,
            Some("application/json"),
            400,
            "invalid_symbol",
        ),
        // TC4: unknown symbol
        (
            "unknown symbol",
            br#"{"symbol":"DOGEUSDT","side":"buy","amount":"10"}"#,
            Some("application/json"),
            404,
            "unknown_symbol",
        ),
        // TC5: more than the cash
        (
            "too expensive",
            br#"{"symbol":"BTCUSDT","side":"buy","amount":"1000000"}"#,
            Some("application/json"),
            422,
            "insufficient_funds",
        ),
        // TC6: selling what is not held
        (
            "no position",
            br#"{"symbol":"BTCUSDT","side":"sell","quantity":"1"}"#,
            Some("application/json"),
            422,
            "insufficient_position",
        ),
        // TC7: negative size (a sign is outside the decimal grammar) and zero
        (
            "negative",
            br#"{"symbol":"BTCUSDT","side":"buy","quantity":"-1"}"#,
            Some("application/json"),
            400,
            "invalid_decimal",
        ),
        (
            "zero",
            br#"{"symbol":"BTCUSDT","side":"buy","quantity":"0"}"#,
            Some("application/json"),
            422,
            "invalid_size",
        ),
        // TC8: not JSON content type
        (
            "text body",
            br#"{"symbol":"BTCUSDT","side":"buy","amount":"10"}"#,
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
    ];
    for (name, body, content_type, status, code) in cases {
        let response = http::request(app.addr, "POST", "/api/v1/trades", content_type, body).await;
        assert_eq!(response.status, status, "{name}: {}", response.body);
        assert_eq!(response.json()["code"], code, "{name}");
        assert!(response.json()["error"].is_string(), "{name}");
    }
    // TC11: the same for a position's levels
    let response = http::request(
        app.addr,
        "PATCH",
        "/api/v1/positions/BTCUSDT",
        Some("application/json"),
        b"[null, null]",
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["code"], "invalid_payload");
    // TC9: a body over the limit is refused without being parsed
    let huge = vec![b' '; 64 * 1024];
    let response = http::request(
        app.addr,
        "POST",
        "/api/v1/trades",
        Some("application/json"),
        &huge,
    )
    .await;
    assert_eq!(
        (response.status, response.json()["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // TC10: bad limits
    for query in ["limit=0", "limit=1001", "limit=abc"] {
        let response = app.get(&format!("/api/v1/trades?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
    }
    assert_eq!(
        app.get("/api/v1/trades")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(portfolio["cash"], "10000");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_loss_and_take_profit_are_set_and_cleared() {
    let app = TestApp::spawn(&[("CRYPTOBOT__MARKET__VOLATILITY_BPS", "1")]).await;
    let missing = app
        .patch_json("/api/v1/positions/SOLUSDT", &json!({"stop_loss": "1"}))
        .await;
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("no_position"))
    );

    let buy = app
        .post_json(
            "/api/v1/trades",
            &json!({"symbol": "SOLUSDT", "side": "buy", "amount": "100"}),
        )
        .await;
    assert_eq!(buy.status, 201, "{}", buy.body);
    let price = dec(&buy.json()["trade"]["price"]);
    let stop = (price / Decimal::from(2)).round_dp(2);
    let take = (price * Decimal::from(2)).round_dp(2);
    let set = app
        .patch_json(
            "/api/v1/positions/SOLUSDT",
            &json!({"stop_loss": stop.to_string(), "take_profit": take.to_string()}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(dec(&set.json()["stop_loss"]), stop);
    assert_eq!(dec(&set.json()["take_profit"]), take);

    let cleared = app
        .patch_json("/api/v1/positions/SOLUSDT", &json!({"stop_loss": null}))
        .await;
    assert_eq!(cleared.status, 200);
    assert!(cleared.json()["stop_loss"].is_null());
    assert_eq!(dec(&cleared.json()["take_profit"]), take);

    let inverted = app
        .patch_json(
            "/api/v1/positions/SOLUSDT",
            &json!({"stop_loss": (take + Decimal::ONE).to_string()}),
        )
        .await;
    assert_eq!(
        (inverted.status, inverted.json()["code"].as_str()),
        (422, Some("invalid_levels"))
    );
    app.stop().await;
}
