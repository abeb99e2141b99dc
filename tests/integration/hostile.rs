//! Hostile input against the real server: every malformed or abusive message gets its exact
//! error or close code, a well-behaved client keeps its stream, no trade runs, memory stays bounded.

use std::time::Duration;

use cryptobot_integration_tests::TestApp;
use cryptobot_integration_tests::ws::{Socket, next_of_type, subscribed_to_ticker};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Hang guard for every read.
const GUARD: Duration = Duration::from_secs(10);

async fn connect(app: &TestApp) -> Socket {
    tokio_tungstenite::connect_async(app.ws_url())
        .await
        .expect("upgrade")
        .0
}

/// Reads until the server's close frame (or the end of the stream) and returns its code.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    let wait = async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f: CloseFrame| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .expect("close within the guard")
}

/// Resident set size of this process (the app runs in-process), in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line")
}

fn manual_trade(payload: &Value) -> String {
    json!({"type": "manual_trade", "payload": payload, "id": "t"}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one table, as the suite asks
async fn hostile_messages_get_exact_error_codes_while_a_good_client_keeps_streaming() {
    let app = TestApp::spawn(&[("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "0")]).await;
    let mut good = subscribed_to_ticker(&app.ws_url(), "BTCUSDT").await;
    next_of_type(&mut good, "ticker_update").await;

    let long = "A".repeat(10 * 1024);
    let nested = "[".repeat(10_000);
    let btc = |size: Value| {
        let mut p = json!({"symbol": "BTCUSDT", "side": "buy"});
        if let (Some(p), Some(size)) = (p.as_object_mut(), size.as_object()) {
            p.extend(size.clone());
        }
        manual_trade(&p)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        // TC0: malformed JSON of several kinds.
        ("truncated", r#"{"type":"ping""#.into(), "invalid_message"),
        (
            "trailing garbage",
            r#"{"type":"ping"} xyz"#.into(),
            "invalid_message",
        ),
        ("not JSON", "hello".into(), "invalid_message"),
        ("array", "[1,2]".into(), "invalid_message"),
        ("number", "42".into(), "invalid_message"),
        ("null", "null".into(), "invalid_message"),
        ("empty string", String::new(), "invalid_message"),
        ("string", r#""ping""#.into(), "invalid_message"),
        ("deeply nested", nested, "invalid_message"),
        (
            "type not a string",
            r#"{"type":7}"#.into(),
            "invalid_message",
        ),
        // TC1: wrong types in every manual_trade field.
        (
            "symbol number",
            manual_trade(&json!({"symbol": 5, "side": "buy", "quantity": "0.1"})),
            "invalid_payload",
        ),
        (
            "side hold",
            manual_trade(&json!({"symbol": "BTCUSDT", "side": "hold", "quantity": "0.1"})),
            "invalid_payload",
        ),
        (
            "quantity number",
            btc(json!({"quantity": 0.1})),
            "invalid_payload",
        ),
        (
            "quantity abc",
            btc(json!({"quantity": "abc"})),
            "invalid_decimal",
        ),
        (
            "quantity and amount",
            btc(json!({"quantity": "0.1", "amount": "10"})),
            "invalid_payload",
        ),
        (
            "neither quantity nor amount",
            btc(json!({})),
            "invalid_payload",
        ),
        (
            "client_order_id number",
            btc(json!({"quantity": "0.1", "client_order_id": 5})),
            "invalid_payload",
        ),
        (
            "unknown field",
            btc(json!({"quantity": "0.1", "x": 1})),
            "invalid_payload",
        ),
        (
            "payload not an object",
            manual_trade(&json!([1])),
            "invalid_payload",
        ),
        // TC2: huge numbers.
        (
            "quantity 1e400",
            btc(json!({"quantity": "1e400"})),
            "invalid_decimal",
        ),
        (
            "quantity 32 nines",
            btc(json!({"quantity": "99999999999999999999999999999999"})),
            "invalid_decimal",
        ),
        (
            "raw huge number",
            r#"{"type":"ping","id":1e400}"#.into(),
            "invalid_message",
        ),
        // TC3: negative (a sign is outside the decimal grammar) and zero quantities.
        (
            "negative quantity",
            btc(json!({"quantity": "-0.1"})),
            "invalid_decimal",
        ),
        (
            "zero quantity",
            btc(json!({"quantity": "0"})),
            "invalid_size",
        ),
        (
            "negative amount",
            btc(json!({"amount": "-10"})),
            "invalid_decimal",
        ),
        // TC4: unknown symbols.
        (
            "unknown symbol trade",
            manual_trade(&json!({"symbol": "DOGEUSDT", "side": "buy", "quantity": "1"})),
            "unknown_symbol",
        ),
        (
            "unknown symbol subscribe",
            json!({"type": "subscribe_ticker", "payload": {"symbol": "DOGEUSDT"}}).to_string(),
            "unknown_symbol",
        ),
        (
            "unknown channel",
            json!({"type": "subscribe", "payload": {"channels": ["ticker:DOGE", "nope"]}})
                .to_string(),
            "unknown_channel",
        ),
        // TC5: very long strings.
        (
            "10 KB symbol",
            manual_trade(&json!({"symbol": long, "side": "buy", "quantity": "0.1"})),
            "invalid_symbol",
        ),
        (
            "10 KB client_order_id",
            btc(json!({"quantity": "0.1", "client_order_id": long})),
            "invalid_client_order_id",
        ),
        (
            "10 KB type",
            json!({"type": long, "payload": {}}).to_string(),
            "unknown_type",
        ),
        // TC6: unknown type.
        (
            "unknown type",
            json!({"type": "launch_missiles", "id": "t"}).to_string(),
            "unknown_type",
        ),
    ];

    let mut hostile = connect(&app).await;
    for (name, text, code) in &cases {
        hostile.send(Message::text(text.clone())).await.unwrap();
        let error = next_of_type(&mut hostile, "error").await;
        assert_eq!(error["code"], *code, "case {name}: {error}");
    }
    // TC7: the id is echoed whenever the request's id could be read.
    for id in [json!("abc"), json!(17), json!({"k": [1, 2]})] {
        let text = json!({"type": "launch_missiles", "id": id}).to_string();
        hostile.send(Message::text(text)).await.unwrap();
        let error = next_of_type(&mut hostile, "error").await;
        assert_eq!(error["code"], "unknown_type");
        assert_eq!(error["id"], id, "id echo");
    }
    // TC8: ... even when the type is missing or not a string (issue 15, item 1).
    for (text, id) in [(r#"{"type":5,"id":77}"#, 77), (r#"{"id":78}"#, 78)] {
        hostile.send(Message::text(text)).await.unwrap();
        let error = next_of_type(&mut hostile, "error").await;
        assert_eq!(
            error,
            json!({"type":"error","error":"Invalid message format","code":"invalid_message","id":id})
        );
    }
    // The hostile connection is still usable.
    hostile
        .send(Message::text(json!({"type": "ping", "id": 1}).to_string()))
        .await
        .unwrap();
    next_of_type(&mut hostile, "pong").await;

    // The well-behaved client still streams.
    for _ in 0..2 {
        let tick = next_of_type(&mut good, "ticker_update").await;
        assert_eq!(tick["payload"]["symbol"], "BTCUSDT");
    }
    // No rejected command executed a trade.
    let trades = app.get("/api/v1/trades").await;
    assert_eq!(trades.status, 200, "{}", trades.body);
    let body = trades.json();
    let list = body
        .as_array()
        .or_else(|| body["trades"].as_array())
        .or_else(|| body["items"].as_array())
        .unwrap_or_else(|| panic!("a trade list: {body}"));
    assert!(list.is_empty(), "no trade executed: {body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_binary_and_flooding_connections_are_closed_with_their_codes() {
    let app = TestApp::spawn(&[
        ("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "5"),
        ("CRYPTOBOT__WS__RATE_LIMIT_WARNINGS", "3"),
    ])
    .await;
    let mut good = subscribed_to_ticker(&app.ws_url(), "BTCUSDT").await;

    // TC0: one byte over the default 64 KiB limit.
    let mut big = connect(&app).await;
    big.send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .unwrap();
    assert_eq!(close_code(&mut big).await, Some(1009), "oversized");

    // TC1: a binary frame.
    let mut binary = connect(&app).await;
    binary
        .send(Message::binary(vec![1_u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut binary).await, Some(1003), "binary");

    // TC2: a text frame whose payload is not UTF-8, sent raw (tungstenite's Text is always UTF-8).
    let mut not_utf8 = connect(&app).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    not_utf8.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut not_utf8).await, Some(1007), "invalid UTF-8");

    // TC3: a flood beyond max_messages_per_sec: rate_limited errors, then 1008.
    let mut flood = connect(&app).await;
    for _ in 0..40 {
        if flood
            .send(Message::text(json!({"type": "ping"}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut rate_limited = 0;
    let code = tokio::time::timeout(GUARD, async {
        while let Some(frame) = flood.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON");
                    if value["type"] == "error" {
                        assert_eq!(value["code"], "rate_limited", "{value}");
                        assert!(value.get("id").is_none_or(Value::is_null));
                        rate_limited += 1;
                    }
                }
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("flood closed within the guard");
    assert!(rate_limited >= 1, "rate_limited frames before the close");
    assert_eq!(code, Some(1008), "flood");

    // The well-behaved client is unaffected.
    next_of_type(&mut good, "ticker_update").await;
    next_of_type(&mut good, "ticker_update").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_large_and_oversized_messages() {
    let app = TestApp::spawn(&[("CRYPTOBOT__WS__MAX_MESSAGES_PER_SEC", "0")]).await;
    let before = vm_rss_kib();
    let mut socket = connect(&app).await;
    // Just under the default 64 KiB limit, sent back to back before any reply is read: each is
    // read and parsed whole, and none is refused although actix-ws reads ahead into the next.
    let filler = "y".repeat(63 * 1024);
    for n in 0..200 {
        let text = json!({"type": "ping", "id": n, "pad": filler}).to_string();
        assert!(text.len() < 64 * 1024);
        socket.feed(Message::text(text)).await.unwrap();
    }
    socket.flush().await.unwrap();
    for n in 0..200 {
        let pong = next_of_type(&mut socket, "pong").await;
        assert_eq!(pong["id"], n);
    }
    // A message in fragments that are each small but add up to more than the limit.
    let mut fragmented = connect(&app).await;
    let piece = vec![b' '; 30 * 1024];
    for (opcode, last) in [
        (OpCode::Data(Data::Text), false),
        (OpCode::Data(Data::Continue), false),
        (OpCode::Data(Data::Continue), true),
    ] {
        let frame = Frame::message(piece.clone(), opcode, last);
        fragmented.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(
        close_code(&mut fragmented).await,
        Some(1009),
        "fragments over the limit"
    );
    // A few oversized ones, each on its own connection (the first closes it).
    for _ in 0..5 {
        let mut big = connect(&app).await;
        // A send error is fine: the server may close before the whole frame is written.
        let _ = big.send(Message::text("z".repeat(1024 * 1024))).await;
        assert_eq!(close_code(&mut big).await.unwrap_or(1009), 1009);
    }
    let after = vm_rss_kib();
    let growth_kib = after.saturating_sub(before);
    assert!(
        growth_kib < 64 * 1024,
        "RSS grew by {growth_kib} KiB (before {before}, after {after})"
    );
    app.stop().await;
}
