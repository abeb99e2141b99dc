//! State survives a graceful restart on the same SQLite file.

use cryptobot_integration_tests::TestApp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_cash_and_positions_survive_a_restart() {
    let app = TestApp::spawn(&[]).await;
    for (id, amount) in [("restart-1", "300"), ("restart-2", "200")] {
        let order =
            json!({"symbol": "BNBUSDT", "side": "buy", "amount": amount, "client_order_id": id});
        assert_eq!(app.post_json("/api/v1/trades", &order).await.status, 201);
    }
    let before = app.get("/api/v1/portfolio").await.json();
    let trades_before = app.get("/api/v1/trades").await.json();
    let path = app.stop().await;

    let app = TestApp::spawn_on(path, &[]).await;
    let after = app.get("/api/v1/portfolio").await.json();
    assert_eq!(after["cash"], before["cash"]);
    assert_eq!(after["realized_pnl"], before["realized_pnl"]);
    assert_eq!(after["trade_count"], before["trade_count"]);
    assert_eq!(
        after["positions"][0]["quantity"],
        before["positions"][0]["quantity"]
    );
    assert_eq!(
        after["positions"][0]["cost_basis"],
        before["positions"][0]["cost_basis"]
    );
    assert_eq!(app.get("/api/v1/trades").await.json(), trades_before);
    // The idempotency record survives too: a retried command is answered, not executed again.
    let retry = app
        .post_json(
            "/api/v1/trades",
            &json!({"symbol": "BNBUSDT", "side": "buy", "amount": "300", "client_order_id": "restart-1"}),
        )
        .await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.json()["replayed"], true);
    app.stop().await;
}
