//! Health, tickers, metrics and the JSON 404.

use std::time::Duration;

use cryptobot_integration_tests::{TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_ok_with_the_configured_symbols() {
    let app = TestApp::spawn(&[]).await;
    let response = app.get("/api/v1/health").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["market"]["source"], "simulated");
    assert_eq!(body["market"]["symbols"].as_array().unwrap().len(), 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickers_are_served_and_prices_move() {
    let app = TestApp::spawn(&[]).await;
    let first = app.get("/api/v1/tickers").await;
    assert_eq!(first.status, 200);
    let tickers = first.json();
    let tickers = tickers.as_array().unwrap();
    assert_eq!(tickers.len(), 5);
    assert_eq!(tickers[0]["symbol"], "BTCUSDT");
    assert!(
        tickers[0]["price"].is_string(),
        "prices are decimal strings"
    );
    let initial = tickers[0]["updated_at"].clone();
    // The simulator ticks 20 times a second in tests; the ticker must change.
    eventually(Duration::from_secs(10), "a new BTCUSDT ticker", || async {
        let now = app.get("/api/v1/tickers/BTCUSDT").await.json();
        (now["updated_at"] != initial).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticker_lookup_errors_are_json_with_codes() {
    let app = TestApp::spawn(&[]).await;
    // TC0: valid but not configured
    let unknown = app.get("/api/v1/tickers/DOGEUSDT").await;
    assert_eq!(
        (unknown.status, unknown.json()["code"].as_str()),
        (404, Some("unknown_symbol"))
    );
    // TC1: not a symbol at all
    let invalid = app.get("/api/v1/tickers/btc-usdt").await;
    assert_eq!(
        (invalid.status, invalid.json()["code"].as_str()),
        (400, Some("invalid_symbol"))
    );
    // TC2: no such route
    let missing = app.get("/api/v1/nope").await;
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let app = TestApp::spawn(&[]).await;
    eventually(Duration::from_secs(10), "ticks counted", || async {
        let metrics = app.get("/metrics").await;
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(
            metrics
                .body
                .contains("# TYPE cryptobot_trades_executed_total counter")
        );
        assert!(metrics.body.contains("cryptobot_portfolio_cash 10000"));
        let ticks = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("cryptobot_ticks_published_total "))?
            .parse::<u64>()
            .ok()?;
        (ticks > 5).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_its_assets_are_served_from_the_binary() {
    let app = TestApp::spawn(&[]).await;
    let page = app.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(
        page.body
            .contains("<script type=\"module\" src=\"/assets/app.js\">")
    );
    for (path, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let asset = app.get(path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(
            asset.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!asset.body.is_empty(), "{path}");
    }
    app.stop().await;
}
