//! `GET /api/v1/performance` and `GET /api/v1/profit/daily` after real trades.

use cryptobot_integration_tests::TestApp;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
        .parse()
        .unwrap()
}

async fn trade(app: &TestApp, body: Value) -> Value {
    let response = app.post_json("/api/v1/trades", &body).await;
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()["trade"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn performance_and_daily_profit_sum_the_trades_exactly() {
    let app = TestApp::spawn(&[]).await;
    let empty = app.get("/api/v1/performance").await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.json()["symbols"], json!([]));
    assert_eq!(empty.json()["total"]["trades"], 0);
    assert!(empty.json()["total"]["win_rate"].is_null());
    assert_eq!(app.get("/api/v1/profit/daily").await.json(), json!([]));

    let buy = trade(
        &app,
        json!({"symbol": "ETHUSDT", "side": "buy", "amount": "500"}),
    )
    .await;
    let sell = trade(
        &app,
        json!({"symbol": "ETHUSDT", "side": "sell", "quantity": buy["quantity"]}),
    )
    .await;
    let other = trade(
        &app,
        json!({"symbol": "BTCUSDT", "side": "buy", "amount": "100"}),
    )
    .await;
    let sum = |field: &str, trades: &[&Value]| trades.iter().map(|t| dec(&t[field])).sum();
    let eth: [&Value; 2] = [&buy, &sell];
    let all: [&Value; 3] = [&buy, &sell, &other];

    let performance = app.get("/api/v1/performance").await.json();
    let symbols = performance["symbols"].as_array().unwrap();
    assert_eq!(symbols.len(), 2, "{performance}");
    assert_eq!(symbols[0]["symbol"], "BTCUSDT");
    assert_eq!(symbols[0]["trades"], 1);
    assert!(symbols[0]["win_rate"].is_null(), "a buy closes nothing");
    assert_eq!(dec(&symbols[0]["fees"]), dec(&other["fee"]));
    let row = &symbols[1];
    assert_eq!(row["symbol"], "ETHUSDT");
    assert_eq!(row["trades"], 2);
    let eth_pnl: Decimal = sum("realized_pnl", &eth);
    assert_eq!(dec(&row["realized_pnl"]), eth_pnl);
    assert_eq!(dec(&row["fees"]), sum("fee", &eth));
    assert_eq!(dec(&row["volume"]), sum("notional", &eth));
    let won = dec(&sell["realized_pnl"]) > Decimal::ZERO;
    assert_eq!(
        dec(&row["win_rate"]),
        if won { Decimal::ONE } else { Decimal::ZERO }
    );
    // The round trip lost or won its fees and the price move, nothing else.
    let price_move = (dec(&sell["price"]) - dec(&buy["price"])) * dec(&buy["quantity"]);
    assert_eq!(eth_pnl, price_move - sum("fee", &eth));
    let total = &performance["total"];
    assert_eq!(total["trades"], 3);
    assert_eq!(dec(&total["realized_pnl"]), sum("realized_pnl", &all));
    assert_eq!(dec(&total["fees"]), sum("fee", &all));
    assert_eq!(dec(&total["volume"]), sum("notional", &all));
    // Books agree: the portfolio's realized PnL is the same sum.
    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(dec(&portfolio["realized_pnl"]), dec(&total["realized_pnl"]));

    let daily = app.get("/api/v1/profit/daily?days=1").await;
    assert_eq!(daily.status, 200, "{}", daily.body);
    let days = daily.json();
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(days.as_array().unwrap().len(), 1, "{days}");
    assert_eq!(days[0]["date"], today);
    assert_eq!(days[0]["trades"], 3);
    assert_eq!(dec(&days[0]["realized_pnl"]), sum("realized_pnl", &all));
    assert_eq!(dec(&days[0]["fees"]), sum("fee", &all));
    assert_eq!(app.get("/api/v1/profit/daily?days=366").await.json(), days);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_profit_refuses_days_out_of_range() {
    let app = TestApp::spawn(&[]).await;
    for query in ["days=0", "days=367", "days=-1", "days=ten", "day=3"] {
        let response = app.get(&format!("/api/v1/profit/daily?{query}")).await;
        assert_eq!(response.status, 400, "{query}: {}", response.body);
        let body = response.json();
        assert_eq!(body["code"], "invalid_query", "{query}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let response = app.get("/api/v1/profit/daily?days=367").await;
    assert!(
        response.body.contains("between 1 and 366"),
        "{}",
        response.body
    );
    app.stop().await;
}
