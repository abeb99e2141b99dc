//! Authentication and scopes against the real server: REST and WebSocket, every token source, and
//! that a refused command executes nothing (docs/security.md).

use std::time::Duration;

use cryptobot_integration_tests::http::{Response, request_with_headers};
use cryptobot_integration_tests::{READER, TRADER, TestApp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Method, path, token, body, expected status, expected code.
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a Value,
    u16,
    Option<&'a str>,
);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    let payload = if method == "GET" {
        String::new()
    } else {
        body.to_string()
    };
    request_with_headers(
        app.addr,
        method,
        path,
        &headers,
        (method != "GET").then_some("application/json"),
        payload.as_bytes(),
    )
    .await
}

/// Number of trades the server executed, read with the trader's token.
async fn trade_count(app: &TestApp) -> usize {
    let trades = call(app, "GET", "/api/v1/trades", Some(TRADER), &Value::Null).await;
    assert_eq!(trades.status, 200, "{}", trades.body);
    trades.json().as_array().map_or(0, Vec::len)
}

async fn next_json(socket: &mut Socket) -> Value {
    let wait = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame.expect("frame") {
                let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                // Pushes of the default channels may interleave; replies carry our ids.
                if value.get("id").is_some() || value["type"] == "welcome" {
                    return value;
                }
            }
        }
        panic!("socket closed");
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a reply within 10 s")
}

fn upgrade_status(
    result: Result<(Socket, impl Sized), tokio_tungstenite::tungstenite::Error>,
) -> u16 {
    match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requires_a_token_and_the_trade_scope() {
    let app = TestApp::spawn_with_tokens().await;
    let order = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "100"});
    let update = json!({"stop_loss": "1"});
    let cases: [Case<'_>; 13] = [
        // TC0: health, the API's own description and the dashboard stay public
        ("GET", "/api/v1/health", None, &Value::Null, 200, None),
        ("GET", "/api/v1/openapi.json", None, &Value::Null, 200, None),
        ("GET", "/", None, &Value::Null, 200, None),
        // TC1: everything else needs a token
        (
            "GET",
            "/api/v1/tickers",
            None,
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        (
            "GET",
            "/api/v1/portfolio",
            Some("wrong-token-0123456789"),
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        (
            "GET",
            "/metrics",
            None,
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        (
            "POST",
            "/api/v1/trades",
            None,
            &order,
            401,
            Some("unauthorized"),
        ),
        // TC2: a read token reads
        (
            "GET",
            "/api/v1/tickers",
            Some(READER),
            &Value::Null,
            200,
            None,
        ),
        ("GET", "/metrics", Some(READER), &Value::Null, 200, None),
        // TC3: but may not trade or change positions
        (
            "POST",
            "/api/v1/trades",
            Some(READER),
            &order,
            403,
            Some("forbidden"),
        ),
        (
            "PATCH",
            "/api/v1/positions/BTCUSDT",
            Some(READER),
            &update,
            403,
            Some("forbidden"),
        ),
        // TC4: an unknown path under /api/v1 does not reveal itself without a token
        (
            "GET",
            "/api/v1/nothing-here",
            None,
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        // TC5: the trade token trades
        ("POST", "/api/v1/trades", Some(TRADER), &order, 201, None),
    ];
    for (method, path, token, body, status, code) in cases {
        let response = call(&app, method, path, token, body).await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        if let Some(code) = code {
            assert_eq!(response.json()["code"], code, "{method} {path}");
            assert!(response.json()["error"].is_string());
        }
        if status == 401 {
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    // TC6: the token in the query string works too
    let query = app.get(&format!("/api/v1/portfolio?token={READER}")).await;
    assert_eq!(query.status, 200, "{}", query.body);
    // Nothing but the trader's order executed.
    assert_eq!(trade_count(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_authenticates_before_the_upgrade_and_gates_commands_on_the_trade_scope() {
    let app = TestApp::spawn_with_tokens().await;
    // TC0: no token, and a wrong one: 401 before any upgrade
    assert_eq!(
        upgrade_status(tokio_tungstenite::connect_async(app.ws_url()).await),
        401
    );
    let wrong = format!("{}?token=wrong-token-0123456789", app.ws_url());
    assert_eq!(
        upgrade_status(tokio_tungstenite::connect_async(wrong).await),
        401
    );

    // TC1: the read token as a sub-protocol (how browsers send it); the welcome lists its scopes
    let mut request = format!("{}?welcome=1", app.ws_url())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("cryptobot.v1, bearer.{READER}").parse().unwrap(),
    );
    let (mut reader, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "cryptobot.v1");
    let welcome = next_json(&mut reader).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["scopes"], json!(["read"]));
    // TC2: manual_trade and update_position without the trade scope are refused
    let commands = [
        json!({"type": "manual_trade", "id": "t1", "payload": {"symbol": "BTCUSDT", "side": "buy", "amount": "100"}}),
        json!({"type": "update_position", "id": "u1", "payload": {"symbol": "BTCUSDT", "stop_loss": "1"}}),
    ];
    for command in &commands {
        reader
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        let reply = next_json(&mut reader).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "forbidden", "{reply}");
        assert_eq!(reply["id"], command["id"]);
    }
    // TC3: reading still works on the same connection
    reader
        .send(Message::text(
            json!({"type": "ping", "id": "p1"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut reader).await["type"], "pong");
    assert_eq!(trade_count(&app).await, 0, "a refused command executed");

    // TC4: the trade token in the Authorization header trades
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {TRADER}").parse().unwrap());
    let (mut trader, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    trader
        .send(Message::text(commands[0].to_string()))
        .await
        .unwrap();
    let reply = next_json(&mut trader).await;
    assert_eq!(reply["type"], "trade_executed", "{reply}");
    // TC5: and the query token too
    let url = format!("{}?token={TRADER}", app.ws_url());
    let (_query, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(trade_count(&app).await, 1);
    app.stop().await;
}

const JWT_SECRET: &str = "integration-test-hs256-secret-0123456789";

fn jwt(claims: &Value) -> String {
    cryptobot_access::auth::encode_jwt(JWT_SECRET.as_bytes(), claims).expect("encodes")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_and_close_the_socket_when_they_expire() {
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__AUTH__MODE", "jwt"),
        ("CRYPTOBOT__AUTH__JWT_SECRET", JWT_SECRET),
    ])
    .await;
    let now = unix_now();
    let reader = jwt(&json!({"sub": "grafana", "exp": now + 600, "scope": "read"}));
    let trader = jwt(&json!({"sub": "alice", "exp": now + 600, "scopes": ["read", "trade"]}));
    let expired = jwt(&json!({"exp": now - 1, "scope": "read trade"}));
    let early = jwt(&json!({"exp": now + 600, "nbf": now + 300, "scope": "read trade"}));
    let order = json!({"symbol": "BTCUSDT", "side": "buy", "amount": "100"});
    let cases: [Case<'_>; 5] = [
        // TC0: expired, and not valid yet: 401
        (
            "GET",
            "/api/v1/portfolio",
            Some(&expired),
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        (
            "GET",
            "/api/v1/portfolio",
            Some(&early),
            &Value::Null,
            401,
            Some("unauthorized"),
        ),
        // TC1: scope claim without trade: reads, may not trade
        (
            "GET",
            "/api/v1/portfolio",
            Some(&reader),
            &Value::Null,
            200,
            None,
        ),
        (
            "POST",
            "/api/v1/trades",
            Some(&reader),
            &order,
            403,
            Some("forbidden"),
        ),
        // TC2: scopes array with trade
        ("POST", "/api/v1/trades", Some(&trader), &order, 201, None),
    ];
    for (method, path, token, body, status, code) in cases {
        let response = call(&app, method, path, token, body).await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        if let Some(code) = code {
            assert_eq!(response.json()["code"], code);
        }
    }
    let expired_ws = format!("{}?token={expired}", app.ws_url());
    assert_eq!(
        upgrade_status(tokio_tungstenite::connect_async(expired_ws).await),
        401
    );

    // TC3: a JWT expiring during the connection closes it with 4401
    let short = jwt(&json!({"exp": unix_now() + 2, "scope": "read"}));
    let url = format!("{}?token={short}", app.ws_url());
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let close = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(frame) = socket.next().await {
            if let Ok(Message::Close(frame)) = frame {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
        }
        None
    })
    .await
    .expect("closed within 15 s (hang guard)");
    assert_eq!(close, Some((4401, "token expired".to_owned())));
    assert_eq!(trade_count_jwt(&app, &trader).await, 1);
    app.stop().await;
}

async fn trade_count_jwt(app: &TestApp, token: &str) -> usize {
    let trades = call(app, "GET", "/api/v1/trades", Some(token), &Value::Null).await;
    assert_eq!(trades.status, 200, "{}", trades.body);
    trades.json().as_array().map_or(0, Vec::len)
}
