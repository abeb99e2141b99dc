//! `/livez` and `/readyz` of a single node (role `all`, no Redis), GET and HEAD.

use cryptobot_integration_tests::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_live_and_ready_and_says_what_it_checked() {
    let app = TestApp::spawn(&[]).await;
    // TC0: liveness checks nothing but that the process serves
    let live = app.get("/livez").await;
    assert_eq!(
        (live.status, live.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    // TC1: readiness: the engine answers, the feed is fresh, the storage commits a write
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.json(),
        serde_json::json!({
            "status": "ready",
            "role": "all",
            "checks": {"engine": "ok", "feed": "ok", "storage": "ok"},
        })
    );
    // TC2: HEAD answers the same status with no body (load balancers probe with HEAD)
    for path in ["/livez", "/readyz"] {
        let head =
            cryptobot_integration_tests::http::request(app.addr, "HEAD", path, None, b"").await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}: {:?}", head.body);
    }
    // TC3: other methods are refused like on every resource
    let post =
        cryptobot_integration_tests::http::request(app.addr, "POST", "/readyz", None, b"").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.json()["code"], "method_not_allowed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_on_the_websocket_path_tells_a_browser_why_its_upgrade_is_refused() {
    use cryptobot_integration_tests::http::request_with_headers;
    let app = TestApp::spawn_with_tokens().await;
    let host = app.addr.to_string();
    let own_origin = format!("http://{host}");
    let addr = app.addr;
    let post = move |headers: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request_with_headers(addr, "POST", "/api/v1/ws", &pairs, None, b"").await
    };
    // TC0: the page's own origin with a valid token: an upgrade would be admitted
    let admitted = post(vec![
        ("Origin", own_origin.clone()),
        (
            "Authorization",
            format!("Bearer {}", cryptobot_integration_tests::TRADER),
        ),
    ])
    .await;
    assert_eq!(admitted.status, 204, "{}", admitted.body);
    assert!(admitted.body.is_empty());
    // TC1: another origin: the upgrade's refusal, which a browser's WebSocket cannot read
    let foreign = post(vec![
        ("Origin", "https://evil.example".to_owned()),
        (
            "Authorization",
            format!("Bearer {}", cryptobot_integration_tests::TRADER),
        ),
    ])
    .await;
    assert_eq!(foreign.status, 403);
    assert_eq!(foreign.json()["code"], "origin_not_allowed");
    // TC2: no token: 401 unauthorized, as the upgrade
    let anonymous = post(vec![("Origin", own_origin)]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["code"], "unauthorized");
    app.stop().await;
}
