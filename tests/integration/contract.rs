//! The contract of docs/protocol.md and docs/api.md, exactly (issue 15): error ids and codes on
//! both paths, one order of checks, one decimal grammar, JSON bodies on every refusal, trade
//! history paging, server time, rate-limit headers and the connection parameters.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptobot_domain::{ClientOrderId, OrderSize, Side, Symbol, Trade, TradeOrigin};
use cryptobot_integration_tests::http::{self, Response};
use cryptobot_integration_tests::ws::{Socket, next_of_type};
use cryptobot_integration_tests::{READER, TRADER, TestApp, temp_db_path};
use cryptobot_services::trading::{Ledger, Storage};
use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

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

/// The next frame that is a direct reply (carries an `id`); pushes are skipped.
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

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: &Value) -> Response {
    let bearer = format!("Bearer {token}");
    let text = body.to_string();
    http::request_with_headers(
        app.addr,
        method,
        path,
        &[("Authorization", &bearer)],
        Some("application/json"),
        text.as_bytes(),
    )
    .await
}

/// Items 2 and 8: the same malformed command gets the same code over REST and WebSocket, every
/// form outside the decimal grammar is refused on both, and nothing trades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one table, as the suite asks
async fn both_paths_refuse_the_same_input_with_the_same_code_and_trade_nothing() {
    let app = TestApp::spawn(&[("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "0")]).await;
    let buy = |field: &str, value: Value| {
        let mut order = json!({"symbol": "BTCUSDT", "side": "buy"});
        order[field] = value;
        order
    };
    let long_id = "a".repeat(65);
    let mut cases: Vec<(String, Value, u16, &str)> = vec![
        // TC0: field validation, REST's codes
        (
            "lower-case symbol".into(),
            json!({"symbol": "btcusdt", "side": "buy", "amount": "10"}),
            400,
            "invalid_symbol",
        ),
        (
            "client_order_id with a space and !".into(),
            json!({"symbol": "BTCUSDT", "side": "buy", "amount": "10", "client_order_id": "bad id!"}),
            400,
            "invalid_client_order_id",
        ),
        (
            "client_order_id of 65 characters".into(),
            json!({"symbol": "BTCUSDT", "side": "buy", "amount": "10", "client_order_id": long_id}),
            400,
            "invalid_client_order_id",
        ),
        (
            "empty client_order_id".into(),
            json!({"symbol": "BTCUSDT", "side": "buy", "amount": "10", "client_order_id": ""}),
            400,
            "invalid_client_order_id",
        ),
        // TC1: shape errors
        (
            "a JSON number".into(),
            buy("amount", json!(10)),
            400,
            "invalid_payload",
        ),
        (
            "both sizes".into(),
            json!({"symbol": "BTCUSDT", "side": "buy", "amount": "10", "quantity": "1"}),
            400,
            "invalid_payload",
        ),
        // TC2: a zero size is well-formed but not positive
        (
            "zero".into(),
            buy("amount", json!("0")),
            422,
            "invalid_size",
        ),
    ];
    // TC3: the decimal grammar's refusals, as amount and as quantity
    for text in [
        "1e-3", "1E3", "+0.001", "-5", ".001", "1.", "00.001", "007", " 0.001", "0.001 ", "2_0",
        "1_0.5_0", "1_000", "1,000", "1 000", "0x10", "NaN", "", "1.2.3", "１",
    ] {
        for field in ["amount", "quantity"] {
            cases.push((
                format!("{field} {text:?}"),
                buy(field, json!(text)),
                400,
                "invalid_decimal",
            ));
        }
    }
    let mut socket = connect(&app.ws_url()).await;
    for (n, (name, order, status, code)) in cases.iter().enumerate() {
        let rest = app.post_json("/api/v1/trades", order).await;
        assert_eq!(
            (rest.status, rest.json()["code"].as_str()),
            (*status, Some(*code)),
            "REST {name}: {}",
            rest.body
        );
        assert!(rest.json()["error"].is_string(), "{name}");
        send(
            &mut socket,
            &json!({"type": "manual_trade", "id": n, "payload": order}),
        )
        .await;
        let ws = reply(&mut socket).await;
        assert_eq!(
            (ws["type"].as_str(), ws["code"].as_str(), ws["id"].as_u64()),
            (Some("error"), Some(*code), Some(n as u64)),
            "WebSocket {name}: {ws}"
        );
        // One rule, one message: what the domain refuses (every case here but serde's shape
        // errors) is worded the same on both paths.
        if *code != "invalid_payload" || name == "both sizes" {
            assert_eq!(ws["error"], rest.json()["error"], "{name}");
        }
    }
    // TC4: price levels follow the same grammar on both paths (checked before the position)
    for (n, level) in ["1_000", "+5", ".5", "1e3", "5."].into_iter().enumerate() {
        let body = json!({"stop_loss": level});
        let rest = app.patch_json("/api/v1/positions/BTCUSDT", &body).await;
        assert_eq!(
            (rest.status, rest.json()["code"].as_str()),
            (400, Some("invalid_decimal")),
            "{level}"
        );
        send(
            &mut socket,
            &json!({"type": "update_position", "id": 1000 + n, "payload": {"symbol": "BTCUSDT", "take_profit": level}}),
        )
        .await;
        assert_eq!(
            reply(&mut socket).await["code"],
            "invalid_decimal",
            "{level}"
        );
    }
    // Nothing traded, and the cash is whole.
    assert_eq!(app.get("/api/v1/trades").await.json(), json!([]));
    let portfolio = app.get("/api/v1/portfolio").await.json();
    assert_eq!(portfolio["cash"], "10000");
    // TC5: the grammar accepts plain decimals, trailing zeros included
    let ok = app
        .post_json("/api/v1/trades", &buy("amount", json!("100.50")))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let trade = &ok.json()["trade"];
    let spent: Decimal = trade["notional"]
        .as_str()
        .unwrap()
        .parse::<Decimal>()
        .unwrap()
        + trade["fee"].as_str().unwrap().parse::<Decimal>().unwrap();
    assert!(spent <= Decimal::new(10050, 2), "spent {spent}");
    app.stop().await;
}

/// Item 7: one order of checks on both paths: authentication, then the scope the command needs,
/// then the payload. A read-only token gets `forbidden` for a malformed trade on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_is_checked_before_the_payload_on_both_paths() {
    let app = TestApp::spawn_with_tokens().await;
    let malformed = json!({"symbol": "btc", "side": "hold", "quantity": 0.1});
    // TC0: REST: 403 before the body is read, for any body
    let rest = call(&app, "POST", "/api/v1/trades", READER, &malformed).await;
    assert_eq!(
        (rest.status, rest.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    let rest = call(
        &app,
        "PATCH",
        "/api/v1/positions/DOGEUSDT",
        READER,
        &json!([]),
    )
    .await;
    assert_eq!(
        (rest.status, rest.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    // TC1: WebSocket: the same, with the id echoed
    let url = format!("{}?token={READER}", app.ws_url());
    let mut reader = connect(&url).await;
    for (id, payload) in [
        ("m1", malformed.clone()),
        ("m2", json!("not an object")),
        ("m3", Value::Null),
    ] {
        send(
            &mut reader,
            &json!({"type": "manual_trade", "id": id, "payload": payload}),
        )
        .await;
        let refused = reply(&mut reader).await;
        assert_eq!(
            (refused["code"].as_str(), refused["id"].as_str()),
            (Some("forbidden"), Some(id))
        );
    }
    send(
        &mut reader,
        &json!({"type": "update_position", "id": "u1", "payload": {"symbol": 5}}),
    )
    .await;
    assert_eq!(reply(&mut reader).await["code"], "forbidden");
    // TC2: with the trade scope the payload is read: its own error
    let url = format!("{}?token={TRADER}", app.ws_url());
    let mut trader = connect(&url).await;
    send(
        &mut trader,
        &json!({"type": "manual_trade", "id": "t1", "payload": malformed}),
    )
    .await;
    assert_eq!(reply(&mut trader).await["code"], "invalid_payload");
    let rest = call(&app, "POST", "/api/v1/trades", TRADER, &malformed).await;
    assert_eq!(
        (rest.status, rest.json()["code"].as_str()),
        (400, Some("invalid_payload"))
    );
    app.stop().await;
}

/// Item 9: `bearer.<token>` without `cryptobot.v1` is refused with a JSON 400, before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_subprotocol_without_cryptobot_v1_is_refused_with_a_clear_error() {
    let app = TestApp::spawn_with_tokens().await;
    let offer = |protocols: String| {
        let mut request = app.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
        request
    };
    // TC0: alone: 400 subprotocol_required, with the API's body
    match tokio_tungstenite::connect_async(offer(format!("bearer.{READER}"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("a JSON body");
            assert_eq!(body["code"], "subprotocol_required", "{body}");
            assert!(body["error"].as_str().unwrap().contains("cryptobot.v1"));
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    // TC1: together with cryptobot.v1: upgraded, cryptobot.v1 selected
    let (_socket, response) =
        tokio_tungstenite::connect_async(offer(format!("bearer.{READER}, cryptobot.v1")))
            .await
            .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "cryptobot.v1");
    app.stop().await;
}

/// Item 3: a frame with RSV1, RSV2 or RSV3 set (no extension is ever negotiated) is a protocol
/// error: 1002, not 1007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_close_with_1002() {
    let app = TestApp::spawn(&[]).await;
    for (name, opcode, bit) in [
        ("text, RSV1", OpCode::Data(Data::Text), 1),
        ("text, RSV2", OpCode::Data(Data::Text), 2),
        ("text, RSV3", OpCode::Data(Data::Text), 3),
        ("ping, RSV1", OpCode::Control(Control::Ping), 1),
    ] {
        let mut socket = connect(&app.ws_url()).await;
        let mut frame = match opcode {
            OpCode::Control(_) => Frame::ping(b"hb".to_vec()),
            data => Frame::message(br#"{"type":"ping"}"#.to_vec(), data, true),
        };
        let header = frame.header_mut();
        match bit {
            1 => header.rsv1 = true,
            2 => header.rsv2 = true,
            _ => header.rsv3 = true,
        }
        socket.send(Message::Frame(frame)).await.unwrap();
        let code = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = socket.next().await {
                match frame {
                    Ok(Message::Close(Some(close))) => return Some(u16::from(close.code)),
                    Ok(Message::Close(None)) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            None
        })
        .await
        .expect("closed within 10 s");
        assert_eq!(code, Some(1002), "{name}");
    }
    app.stop().await;
}

/// Items 4 and 5: refusals have the API's body, and a valid symbol the market does not trade is
/// `unknown_symbol` on `PATCH /positions` as on `GET /tickers`, over WebSocket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_json_bodies_and_unknown_symbols_are_unknown_everywhere() {
    let app = TestApp::spawn(&[]).await;
    // TC0: a method a route does not take: 405 with a body (the WebSocket route included)
    // and the `Allow` header RFC 9110 requires.
    for (method, path, allow) in [
        ("DELETE", "/api/v1/trades", "GET, POST"),
        ("PUT", "/api/v1/tickers", "GET"),
        ("POST", "/api/v1/portfolio", "GET"),
        ("PUT", "/api/v1/ws", "GET, POST"),
        ("POST", "/api/v1/time", "GET"),
        ("TRACE", "/metrics", "GET"),
        ("GET", "/api/v1/positions/BTCUSDT", "PATCH"),
    ] {
        let response = http::request(app.addr, method, path, None, b"").await;
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(
            response.json()["code"],
            "method_not_allowed",
            "{method} {path}"
        );
        assert!(response.json()["error"].is_string());
        if path != "/api/v1/ws" {
            assert!(
                response.header("ratelimit-limit").is_some(),
                "{method} {path}"
            );
        }
    }
    // TC0b: a request to the WebSocket endpoint that is not a handshake: JSON too
    let plain = http::request(app.addr, "GET", "/api/v1/ws", None, b"").await;
    assert_eq!(plain.status, 400);
    assert_eq!(plain.json()["code"], "invalid_upgrade");
    assert!(
        plain.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("not a WebSocket upgrade request"),
        "{}",
        plain.body
    );
    // (raw: the test client's own `Connection: close` would hide the upgrade)
    let old_version = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "GET /api/v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            app.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = vec![0; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut raw))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&raw[..n]).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        http::Response {
            status: head.split(' ').nth(1).unwrap().parse().unwrap(),
            headers: Vec::new(),
            body: body.to_owned(),
        }
    };
    assert_eq!(old_version.status, 426, "{}", old_version.body);
    assert_eq!(old_version.json()["code"], "invalid_upgrade");
    // TC1: unknown vs not held
    let doge = app
        .patch_json("/api/v1/positions/DOGEUSDT", &json!({"stop_loss": "1"}))
        .await;
    assert_eq!(
        (doge.status, doge.json()["code"].as_str()),
        (404, Some("unknown_symbol")),
        "{}",
        doge.body
    );
    let ticker = app.get("/api/v1/tickers/DOGEUSDT").await;
    assert_eq!(ticker.json()["code"], "unknown_symbol");
    let btc = app
        .patch_json("/api/v1/positions/BTCUSDT", &json!({"stop_loss": "1"}))
        .await;
    assert_eq!(
        (btc.status, btc.json()["code"].as_str()),
        (404, Some("no_position"))
    );
    let mut socket = connect(&app.ws_url()).await;
    send(
        &mut socket,
        &json!({"type": "update_position", "id": 1, "payload": {"symbol": "DOGEUSDT", "stop_loss": "1"}}),
    )
    .await;
    assert_eq!(reply(&mut socket).await["code"], "unknown_symbol");
    app.stop().await;
}

/// Item 6: `request_head_timeout_ms` is a minimum: a half-sent head is not cut before it, and is
/// cut (408 or a close) after it. actix-http sets the deadline from a clock it refreshes every
/// 500 ms, so connections opened at different moments of that cycle are tried: one opened just
/// before a refresh was cut up to half a second early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_head_timeout_is_never_shorter_than_configured() {
    let app = TestApp::spawn(&[("CRYPTOBOT__SERVER__REQUEST_HEAD_TIMEOUT_MS", "1000")]).await;
    let addr = app.addr;
    let slowloris = |delay_ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connected = tokio::time::Instant::now();
        stream
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut first = [0_u8; 1];
        let early = tokio::time::timeout_at(
            connected + Duration::from_millis(950),
            stream.read(&mut first),
        )
        .await;
        assert!(
            early.is_err(),
            "connection opened at +{delay_ms} ms cut before the configured timeout: {early:?}"
        );
        let mut answer = Vec::new();
        let late = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("cut within the guard");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            late.is_err() || answer.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    };
    let tries: Vec<_> = (0..5).map(|n| tokio::spawn(slowloris(n * 110))).collect();
    for attempt in tries {
        attempt.await.unwrap();
    }
    app.stop().await;
}

/// `GET /api/v1/time` (public) and the `RateLimit-*` headers on every REST answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_time_and_rate_limit_headers() {
    let tokens = json!([{"name": "reader", "token": READER, "scopes": ["read"]}]).to_string();
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__AUTH__MODE", "token"),
        ("CRYPTOBOT__AUTH__TOKENS", &tokens),
        ("CRYPTOBOT__SERVER__REST_RATE_PER_IP", "1"),
        ("CRYPTOBOT__SERVER__REST_BURST_PER_IP", "5"),
    ])
    .await;
    // TC0: the time, without a token; the three fields agree
    let time = app.get("/api/v1/time").await;
    assert_eq!(time.status, 200, "{}", time.body);
    let body = time.json();
    let server_time: DateTime<Utc> = body["server_time"].as_str().unwrap().parse().unwrap();
    let ts_us = body["ts_us"].as_i64().unwrap();
    assert_eq!(server_time.timestamp_micros(), ts_us);
    assert_eq!(
        body["timestamp"].as_i64().unwrap(),
        ts_us.div_euclid(1_000_000)
    );
    // A fresh address: the first answer had the whole burst but one.
    let header = |response: &Response, name: &str| -> u64 {
        response
            .header(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    assert_eq!(header(&time, "ratelimit-limit"), 5);
    assert_eq!(header(&time, "ratelimit-remaining"), 4);
    assert!(header(&time, "ratelimit-reset") >= 1);
    // TC1: every answer carries them (a 401 too) until the 429, which says 0 and when to retry
    let mut refused = None;
    for _ in 0..20 {
        let response = app.get("/api/v1/portfolio").await;
        assert_eq!(header(&response, "ratelimit-limit"), 5);
        if response.status == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status, 401, "{}", response.body);
        assert!(header(&response, "ratelimit-remaining") < 4);
    }
    let refused = refused.expect("the burst runs out");
    assert_eq!(header(&refused, "ratelimit-remaining"), 0);
    assert!(header(&refused, "retry-after") >= 1);
    assert_eq!(refused.json()["code"], "rate_limited");
    app.stop().await;
}

/// `welcome` and the subscribe acks announce the connection's parameters; `list_subscriptions`
/// lists the active set; a refused subscription names the offending channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_announces_its_parameters_and_lists_its_subscriptions() {
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__WS__HEARTBEAT_INTERVAL_SECS", "7"),
        ("CRYPTOBOT__WS__CLIENT_TIMEOUT_SECS", "30"),
        ("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "20"),
        ("CRYPTOBOT__WS__MAX_SUBSCRIPTIONS", "5"),
    ])
    .await;
    let expected = json!({"heartbeat_interval_secs": 7, "client_timeout_secs": 30, "max_messages_per_sec": 20, "max_subscriptions": 5});
    let announced = |frame: &Value| {
        expected
            .as_object()
            .unwrap()
            .keys()
            .map(|key| (key.clone(), frame[key].clone()))
            .collect::<serde_json::Map<_, _>>()
    };
    let mut socket = connect(&format!("{}?welcome=1", app.ws_url())).await;
    let welcome = next_of_type(&mut socket, "welcome").await;
    assert_eq!(Value::Object(announced(&welcome)), expected, "{welcome}");
    // TC0: both subscribe acks
    send(
        &mut socket,
        &json!({"type": "subscribe_ticker", "id": 1, "payload": {"symbol": "BTCUSDT"}}),
    )
    .await;
    let ack = reply(&mut socket).await;
    assert_eq!(ack["type"], "subscription_success");
    assert_eq!(Value::Object(announced(&ack)), expected, "{ack}");
    send(
        &mut socket,
        &json!({"type": "subscribe", "id": 2, "payload": {"channels": ["signals"]}}),
    )
    .await;
    let ack = reply(&mut socket).await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(Value::Object(announced(&ack)), expected, "{ack}");
    // TC1: the refusals name the channel
    send(
        &mut socket,
        &json!({"type": "subscribe", "id": 3, "payload": {"channels": ["alerts", "ticker:ETHUSDT"]}}),
    )
    .await;
    let refused = reply(&mut socket).await;
    assert_eq!(
        (refused["code"].as_str(), refused["channel"].as_str()),
        (Some("too_many_subscriptions"), Some("ticker:ETHUSDT")),
        "{refused}"
    );
    for (channels, code, channel) in [
        (json!(["signals", "fills"]), "unknown_channel", "fills"),
        (
            json!(["ticker:DOGEUSDT"]),
            "unknown_symbol",
            "ticker:DOGEUSDT",
        ),
        (json!(["ticker:btc"]), "invalid_symbol", "ticker:btc"),
    ] {
        send(
            &mut socket,
            &json!({"type": "unsubscribe", "id": 4, "payload": {"channels": channels}}),
        )
        .await;
        let refused = reply(&mut socket).await;
        if code == "unknown_symbol" {
            // Unsubscribing a well-formed channel is never an error.
            assert_eq!(refused["type"], "unsubscribed");
        } else {
            assert_eq!(
                (refused["code"].as_str(), refused["channel"].as_str()),
                (Some(code), Some(channel))
            );
        }
        send(
            &mut socket,
            &json!({"type": "subscribe", "id": 5, "payload": {"channels": channels}}),
        )
        .await;
        let refused = reply(&mut socket).await;
        assert_eq!(
            (refused["code"].as_str(), refused["channel"].as_str()),
            (Some(code), Some(channel)),
            "{refused}"
        );
    }
    // TC2: the active set, unchanged by the refusals
    send(&mut socket, &json!({"type": "list_subscriptions", "id": 6})).await;
    let list = reply(&mut socket).await;
    assert_eq!(list["type"], "subscriptions", "{list}");
    assert_eq!(
        list["channels"],
        json!(["ticker:BTCUSDT", "trades", "portfolio", "signals", "alerts"])
    );
    assert_eq!(Value::Object(announced(&list)), expected);
    assert!(list["epoch"].is_u64());
    app.stop().await;
}

/// Writes `count` buys, alternating BTCUSDT and ETHUSDT, 250 ms apart from `start`, through the
/// storage layer and the real books (one commit each, as the engine makes them).
fn seed_trades(path: &std::path::Path, start: DateTime<Utc>, count: u64) {
    let storage = Storage::open(path.to_str().unwrap()).unwrap();
    let mut ledger = Ledger::new(Decimal::from(10_000));
    storage.init_account(ledger.account()).unwrap();
    let (price, quantity) = (Decimal::from(100), Decimal::new(1, 2));
    for id in 1..=count {
        let symbol = if id % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" };
        let trade = Trade {
            id,
            symbol: Symbol::parse(symbol).unwrap(),
            side: Side::Buy,
            price,
            quantity,
            fee: Decimal::ZERO,
            notional: price * quantity,
            realized_pnl: Decimal::ZERO,
            executed_at: start + chrono::Duration::milliseconds(250 * i64::try_from(id).unwrap()),
            client_order_id: Some(ClientOrderId::parse(&format!("seed-{id}")).unwrap()),
            origin: TradeOrigin::Manual,
        };
        ledger.apply(&trade).unwrap();
        storage
            .commit_trade(
                &trade,
                OrderSize::Quantity(quantity),
                ledger.position(&trade.symbol),
                ledger.account(),
            )
            .unwrap();
    }
}

/// The `rel="next"` URL of a page, if any.
fn next_link(response: &Response) -> Option<String> {
    let link = response.header("link")?;
    let (url, rel) = link.split_once(">; ")?;
    assert_eq!(rel, r#"rel="next""#);
    Some(url.trim_start_matches('<').to_owned())
}

/// Follows `Link: rel="next"` from `first` to the end; returns every trade id in order.
async fn fetch_all(app: &TestApp, first: &str) -> (Vec<u64>, usize) {
    let (mut ids, mut pages, mut url) = (Vec::new(), 0, Some(first.to_owned()));
    while let Some(path) = url {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        ids.extend(
            page.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap()),
        );
        pages += 1;
        assert!(pages <= 100, "paging does not end");
        url = next_link(&page);
    }
    (ids, pages)
}

/// Trade history paging: all of 5,000 trades, one symbol in a time range, after an id, and the
/// lookup by `client_order_id`, read over the real server's REST API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_page_through_5000_trades_and_filter_them() {
    // Seeded through the storage layer (5,000 engine commands would take long in debug); on
    // tmpfs when there is one, since every commit is an fsync.
    let shm = std::path::Path::new("/dev/shm");
    let path = if shm.is_dir() {
        shm.join(temp_db_path().strip_prefix(std::env::temp_dir()).unwrap())
    } else {
        temp_db_path()
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    seed_trades(&path, start, 5_000);
    let app = TestApp::spawn_on(path, &[]).await;
    // TC0: everything, newest first, 1,000 per page
    let (ids, pages) = fetch_all(&app, "/api/v1/trades?limit=1000").await;
    assert_eq!(pages, 5);
    assert_eq!(ids, (1..=5_000).rev().collect::<Vec<u64>>());
    // TC1: one symbol in a time range (from inclusive, to exclusive), 250 per page: trade n is
    // at n * 250 ms, so [100 s, 400 s) holds trades 400..1600 and ETHUSDT the even ones
    let range = format!(
        "/api/v1/trades?symbol=ETHUSDT&from={}&to={}&limit=250",
        "2026-01-01T00:01:40Z", "2026-01-01T00:06:40Z"
    );
    let (ids, pages) = fetch_all(&app, &range).await;
    let expected: Vec<u64> = (400..1600).rev().filter(|id| id % 2 == 0).collect();
    assert_eq!(ids.len(), 600);
    assert_eq!(ids, expected);
    assert_eq!(pages, 3);
    // TC2: bounds with a fraction of a second: trades 401 (100.25 s) and 402 (100.5 s)
    let (ids, _) = fetch_all(
        &app,
        "/api/v1/trades?from=2026-01-01T00:01:40.25Z&to=2026-01-01T00:01:40.75Z",
    )
    .await;
    assert_eq!(ids, [402, 401]);
    // TC3: oldest first after an id
    let (ids, _) = fetch_all(&app, "/api/v1/trades?after_id=4990&limit=4").await;
    assert_eq!(ids, (4991..=5000).collect::<Vec<u64>>());
    // TC4: what happened to a command whose acknowledgement was lost
    let found = app
        .get("/api/v1/trades?client_order_id=seed-77")
        .await
        .json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["id"], 77);
    assert_eq!(found[0]["client_order_id"], "seed-77");
    let missing = app.get("/api/v1/trades?client_order_id=never-sent").await;
    assert_eq!(missing.json(), json!([]));
    // TC5: bad queries get their codes
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("symbol=ethusdt", "invalid_symbol"),
        ("client_order_id=bad!", "invalid_client_order_id"),
        ("from=yesterday", "invalid_query"),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_query",
        ),
        ("before_id=abc", "invalid_query"),
        ("page=2", "invalid_query"),
    ] {
        let response = app.get(&format!("/api/v1/trades?{query}")).await;
        assert_eq!(
            (response.status, response.json()["code"].as_str()),
            (400, Some(code)),
            "{query}: {}",
            response.body
        );
    }
    let distinct: BTreeSet<u64> = fetch_all(&app, "/api/v1/trades?limit=999")
        .await
        .0
        .into_iter()
        .collect();
    assert_eq!(distinct.len(), 5_000, "no trade twice across pages");
    let storage_path = app.stop().await;
    if let Some(dir) = storage_path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
