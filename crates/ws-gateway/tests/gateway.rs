//! Black-box tests of the gateway over a real actix HttpServer and real sockets.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cryptobot_domain::{Alert, AlertType, Event, Severity, fixtures};
use cryptobot_services::trading::{MockPortfolioService, MockTradeService};
use cryptobot_services::{EventBus, Execution, ServiceError};
use cryptobot_ws_gateway::GatewayConfig;
use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn alert(message: &str) -> Event {
    Event::Alert(Alert {
        alert_type: AlertType::PriceMove,
        severity: Severity::Warning,
        message: message.to_owned(),
        symbol: None,
        raised_at: fixtures::instant(),
    })
}

fn subscribe_ticker(symbol: &str) -> Value {
    json!({"type": "subscribe_ticker", "payload": {"symbol": symbol}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_test_subscribe_ticker_reads_subscription_success_first() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    send_json(&mut ws, subscribe_ticker("BTCUSDT")).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "subscription_success");
    assert_eq!(reply["message"], "Subscribed to BTCUSDT");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_live_updates_with_seq_and_decimal_strings() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    send_json(&mut ws, subscribe_ticker("BTCUSDT")).await;
    assert_eq!(next_json(&mut ws).await["type"], "subscription_success");
    // Nothing published yet: the snapshot comes from the market service.
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "ticker_update");
    assert_eq!(snapshot["snapshot"], true);
    assert_eq!(snapshot["payload"]["price"], "100");
    for price in ["101.5", "102.25"] {
        server.publish(Event::Ticker(fixtures::ticker("BTCUSDT", price)));
    }
    // A live update (conflation may skip the first of the two, never the newest).
    let mut last = next_of_type(&mut ws, "ticker_update").await;
    if last["payload"]["price"] != "102.25" {
        assert_eq!(last["payload"]["price"], "101.5");
        last = next_of_type(&mut ws, "ticker_update").await;
    }
    assert_eq!(last["payload"]["price"], "102.25");
    assert_eq!(last["seq"], 2);
    assert_eq!(last["channel"], "ticker:BTCUSDT");
    assert!(last["ts_us"].as_i64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(
        last["timestamp"].as_i64().unwrap(),
        last["ts_us"].as_i64().unwrap() / 1_000_000
    );
    assert!(last.get("snapshot").is_none());

    // A second subscriber gets the latest published frame as its snapshot, with its seq.
    let mut late = server.connect().await;
    send_json(&mut late, subscribe_ticker("BTCUSDT")).await;
    assert_eq!(next_json(&mut late).await["type"], "subscription_success");
    let snapshot = next_json(&mut late).await;
    assert_eq!(
        (
            snapshot["payload"]["price"].clone(),
            snapshot["seq"].clone()
        ),
        (json!("102.25"), json!(2))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_and_alerts_reach_many_concurrent_clients_with_seed_shapes() {
    let server = start(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..25 {
        clients.push(server.connect().await);
    }
    server.publish(Event::TradeExecuted(fixtures::trade(
        7, "BTCUSDT", "42000.5", "0.01",
    )));
    server.publish(alert("BTC moved 5%"));
    let readers = clients.into_iter().map(|mut ws| {
        tokio::spawn(async move {
            let trade = next_json(&mut ws).await;
            let alert = next_json(&mut ws).await;
            (trade, alert)
        })
    });
    for reader in readers {
        let (trade, alert) = reader.await.unwrap();
        assert_eq!(trade["type"], "trade_notification");
        let p = &trade["payload"];
        assert_eq!(
            (&p["symbol"], &p["price"], &p["quantity"], &p["type"]),
            (
                &json!("BTCUSDT"),
                &json!("42000.5"),
                &json!("0.01"),
                &json!("buy")
            )
        );
        assert_eq!(p["purchased_at"], "2024-01-01T00:00:00Z");
        assert_eq!(
            (trade["seq"].clone(), trade["channel"].clone()),
            (json!(1), json!("trades"))
        );
        assert!(trade["timestamp"].is_i64());
        assert_eq!(alert["type"], "alert");
        assert_eq!(alert["payload"]["alert_type"], "price_move");
        assert_eq!(alert["payload"]["message"], "BTC moved 5%");
        assert!(alert["timestamp"].is_i64());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_frame_has_the_seed_text_a_code_and_the_id() {
    let server = start(GatewayConfig {
        max_subscriptions: 4,
        ..test_config()
    })
    .await;
    let mut ws = server.connect().await;
    let cases: Vec<(Message, Value)> = vec![
        // TC0: not JSON
        (
            Message::text("not json"),
            json!({"type":"error","error":"Invalid message format","code":"invalid_message"}),
        ),
        // TC1: unknown type, id echoed
        (
            Message::text(r#"{"type":"launch","id":"a1"}"#),
            json!({"type":"error","error":"Unknown message type","code":"unknown_type","id":"a1"}),
        ),
        // TC2: bad ticker payload
        (
            Message::text(r#"{"type":"subscribe_ticker","payload":{"sym":"BTCUSDT"},"id":2}"#),
            json!({"type":"error","error":"Invalid payload for ticker subscription","code":"invalid_payload","id":2}),
        ),
        // TC3: unknown symbol
        (
            Message::text(subscribe_ticker("DOGEUSDT").to_string()),
            json!({"type":"error","error":"unknown symbol DOGEUSDT","code":"unknown_symbol","channel":"ticker:DOGEUSDT"}),
        ),
    ];
    for (sent, expected) in cases {
        ws.send(sent).await.unwrap();
        assert_eq!(next_json(&mut ws).await, expected);
    }
    // TC4: unknown channel
    send_json(
        &mut ws,
        json!({"type":"subscribe","payload":{"channels":["fills"]}}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(
        (reply["type"].clone(), reply["code"].clone()),
        (json!("error"), json!("unknown_channel"))
    );
    // TC5: too many subscriptions (3 defaults + 1 allowed)
    send_json(
        &mut ws,
        json!({"type":"subscribe","payload":{"channels":["signals","ticker:BTCUSDT"]}}),
    )
    .await;
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["code"], "too_many_subscriptions");
    assert_eq!(
        refused["channel"], "ticker:BTCUSDT",
        "the first channel that does not fit"
    );
    // TC6: decimals must be strings
    send_json(
        &mut ws,
        json!({"type":"manual_trade","payload":{"symbol":"BTCUSDT","side":"buy","quantity":0.1}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "invalid_payload");
    // The connection survives every error.
    send_json(&mut ws, json!({"type":"ping","id":"p"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    server.stop().await;
}

/// Reads until the pong of a ping sent now, returning the types of everything seen before it.
async fn types_until_pong(ws: &mut Ws) -> Vec<String> {
    send_json(ws, json!({"type":"ping","id":"sync"})).await;
    let mut seen = Vec::new();
    loop {
        let value = next_json(ws).await;
        if value["type"] == "pong" {
            return seen;
        }
        seen.push(format!("{}:{}", value["type"], value["channel"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_updates() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    send_json(
        &mut ws,
        json!({"type":"subscribe","payload":{"channels":["ticker:BTCUSDT","ticker:ETHUSDT"]}}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(
        ack["channels"],
        json!([
            "ticker:BTCUSDT",
            "ticker:ETHUSDT",
            "trades",
            "portfolio",
            "alerts"
        ])
    );
    next_of_type(&mut ws, "ticker_update").await;
    next_of_type(&mut ws, "ticker_update").await;
    send_json(
        &mut ws,
        json!({"type":"unsubscribe_ticker","payload":{"symbol":"BTCUSDT"},"id":1}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "unsubscription_success");
    assert_eq!(ack["message"], "Unsubscribed from BTCUSDT");
    assert_eq!(ack["id"], 1);
    // The alert is a barrier: the hub handles events in order, so both tickers were in the
    // watches before the alert was broadcast, and the actor sends watched tickers before requests.
    server.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
    server.publish(Event::Ticker(fixtures::ticker("ETHUSDT", "2")));
    server.publish(alert("barrier"));
    next_of_type(&mut ws, "alert").await;
    let seen = types_until_pong(&mut ws).await;
    let mut all = seen.clone();
    all.push("-".to_owned());
    assert!(
        !all.iter().any(|t| t.contains("ticker:BTCUSDT")),
        "BTC still delivered: {seen:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_trade_replies_and_broadcasts_and_forwards_error_codes() {
    let server = start_with(
        test_config(),
        |bus| {
            let mut trade = MockTradeService::new();
            trade.expect_execute().returning(move |request| {
                if request.symbol().as_str() == "ETHUSDT" {
                    return Err(ServiceError::InsufficientFunds {
                        needed: fixtures::dec("10"),
                        available: fixtures::dec("1"),
                    });
                }
                let mut trade = fixtures::trade(11, "BTCUSDT", "100", "0.5");
                trade.client_order_id = request.client_order_id().cloned();
                // Like the real engine: commit, then publish.
                bus.publish(Event::TradeExecuted(trade.clone()));
                Ok(Execution {
                    trade,
                    replayed: request.client_order_id().is_some(),
                })
            });
            trade
        },
        MockPortfolioService::new(),
    )
    .await;
    let mut ws = server.connect().await;
    let mut watcher = server.connect().await;
    send_json(&mut ws, json!({"type":"manual_trade","id":"t1","payload":{"symbol":"BTCUSDT","side":"buy","quantity":"0.5"}})).await;
    let reply = next_of_type(&mut ws, "trade_executed").await;
    assert_eq!(reply["id"], "t1");
    assert_eq!(reply["payload"]["trade"]["id"], 11);
    assert_eq!(reply["payload"]["trade"]["price"], "100");
    assert_eq!(reply["payload"]["replayed"], false);
    assert!(
        reply["payload"]["note"]
            .as_str()
            .unwrap()
            .contains("not idempotent")
    );
    // With a client_order_id: no note, and `replayed` is forwarded.
    send_json(&mut ws, json!({"type":"manual_trade","id":"t2","payload":{"symbol":"BTCUSDT","side":"buy","amount":"50","client_order_id":"c-1"}})).await;
    let reply = next_of_type(&mut ws, "trade_executed").await;
    assert_eq!(reply["payload"]["replayed"], true);
    assert!(reply["payload"].get("note").is_none());
    // Everyone sees the notification.
    let note = next_of_type(&mut watcher, "trade_notification").await;
    assert_eq!(note["payload"]["id"], 11);
    // Errors carry the service's code.
    send_json(&mut ws, json!({"type":"manual_trade","id":"t3","payload":{"symbol":"ETHUSDT","side":"buy","quantity":"1"}})).await;
    let reply = next_of_type(&mut ws, "error").await;
    assert_eq!(
        (reply["code"].clone(), reply["id"].clone()),
        (json!("insufficient_funds"), json!("t3"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_position_replies_position_updated() {
    let mut portfolio = MockPortfolioService::new();
    portfolio
        .expect_update_position()
        .returning(|symbol, update| {
            Ok(cryptobot_domain::Position {
                symbol,
                quantity: fixtures::dec("1"),
                avg_entry_price: fixtures::dec("100"),
                cost_basis: fixtures::dec("100"),
                stop_loss: update.stop_loss.apply(None),
                take_profit: update.take_profit.apply(Some(fixtures::dec("150"))),
            })
        });
    let server = start_with(test_config(), |_| MockTradeService::new(), portfolio).await;
    let mut ws = server.connect().await;
    send_json(&mut ws, json!({"type":"update_position","id":5,"payload":{"symbol":"BTCUSDT","stop_loss":"90","take_profit":null}})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "position_updated");
    assert_eq!(reply["id"], 5);
    assert_eq!(reply["payload"]["stop_loss"], "90");
    assert_eq!(reply["payload"]["take_profit"], Value::Null);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portfolio_is_pushed_periodically_once_for_all_clients_and_on_change() {
    let server = start(GatewayConfig {
        portfolio_interval_secs: 1,
        ..test_config()
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.connect().await);
    }
    for ws in &mut clients {
        let update = next_of_type(ws, "portfolio_update").await;
        assert_eq!(update["snapshot"], true);
        assert_eq!(update["payload"]["cash"], "10000");
        assert!(update["timestamp"].is_i64());
    }
    let calls = server.summary_calls.load(Ordering::SeqCst);
    assert!(calls < 3, "one fetch per interval, not per client: {calls}");
    // A change is pushed at once, with its bus seq.
    server.publish(Event::PortfolioChanged(summary()));
    for ws in &mut clients {
        loop {
            let update = next_of_type(ws, "portfolio_update").await;
            if update.get("snapshot").is_none() {
                assert_eq!(update["seq"], 1);
                break;
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_fetch_stops_when_every_client_left() {
    let server = start(GatewayConfig {
        portfolio_interval_secs: 1,
        ..test_config()
    })
    .await;
    let mut ws = server.connect().await;
    next_of_type(&mut ws, "portfolio_update").await;
    ws.close(None).await.unwrap();
    while server.gateway.open_connections() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = server.summary_calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(server.summary_calls.load(Ordering::SeqCst), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_delay_a_fast_one() {
    let server = start(GatewayConfig {
        event_buffer: 64,
        send_timeout_ms: 500,
        ..test_config()
    })
    .await;
    let mut slow = server.connect_small_buffer().await;
    let mut fast = server.connect().await;
    const TOTAL: u64 = 3_000;
    let mut next_seq = 1;
    for batch in 0..TOTAL / 30 {
        for n in 0..30 {
            let id = batch * 30 + n + 1;
            let mut trade = fixtures::trade(id, "BTCUSDT", "100", "1");
            trade.client_order_id = None;
            server.publish(Event::TradeExecuted(trade));
        }
        // The fast client keeps up with every batch, whatever the slow one does.
        while next_seq <= (batch + 1) * 30 {
            let frame = next_json(&mut fast).await;
            assert_eq!(frame["type"], "trade_notification");
            assert_eq!(frame["seq"], next_seq, "in order, nothing missing");
            next_seq += 1;
        }
    }
    // The slow client got a gap-free prefix, then was closed (never silently skipped).
    let mut expected = 1;
    let ended_with = loop {
        match next_seen(&mut slow).await {
            Seen::Json(frame) => {
                assert_eq!(frame["seq"], expected, "no silent gap");
                expected += 1;
            }
            other => break other,
        }
    };
    assert!(expected - 1 < TOTAL, "the slow client cannot have kept up");
    if let Seen::Close(Some(frame)) = &ended_with {
        assert_eq!(u16::from(frame.code), 1008);
        assert_eq!(frame.reason.as_str(), "slow consumer");
    }
    assert_eq!(
        server
            .gateway
            .metrics()
            .slow_consumer_closes
            .load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_keeps_the_newest_price() {
    let server = start(GatewayConfig {
        send_timeout_ms: 10_000,
        ..test_config()
    })
    .await;
    let mut ws = server.connect_small_buffer().await;
    send_json(&mut ws, subscribe_ticker("BTCUSDT")).await;
    const TOTAL: u64 = 1_000;
    for n in 1..=TOTAL {
        let mut ticker = fixtures::ticker("BTCUSDT", &n.to_string());
        ticker.symbol = fixtures::symbol("BTCUSDT");
        server.publish(Event::Ticker(ticker));
    }
    let final_price = TOTAL.to_string();
    let (mut received, mut last_seq) = (0_u64, 0_u64);
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] != "ticker_update" {
            continue;
        }
        let seq = frame["seq"].as_u64().unwrap();
        assert!(
            seq > last_seq || seq == 0,
            "newer only: {seq} after {last_seq}"
        );
        last_seq = seq;
        received += 1;
        if frame["payload"]["price"] == final_price.as_str() {
            break;
        }
    }
    assert_eq!(last_seq, TOTAL);
    assert!(
        received < TOTAL,
        "updates were conflated ({received} of {TOTAL})"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001_within_a_second_and_closed_resolves() {
    let server = start(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.connect().await);
    }
    server.shutdown.cancel();
    for ws in &mut clients {
        let code = tokio::time::timeout(Duration::from_secs(1), close_code(ws))
            .await
            .expect("close frame within a second");
        assert_eq!(code, 1001);
    }
    tokio::time::timeout(Duration::from_secs(2), server.gateway.closed())
        .await
        .expect("every actor ended");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_closes_a_silent_client_and_keeps_a_responsive_one() {
    let server = start(GatewayConfig {
        heartbeat_interval_secs: 1,
        client_timeout_secs: 2,
        ..test_config()
    })
    .await;
    let mut silent = server.connect().await;
    let mut alive = server.connect().await;
    // The responsive client reads (tungstenite answers pings while reading) for 3.5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3_500);
    let mut pings = 0;
    while let Ok(frame) =
        tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut alive)).await
    {
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(frame))) => panic!("responsive client closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(pings >= 1, "the server pings");
    // The silent one has been closed with the idle code.
    assert_eq!(close_code(&mut silent).await, 4000);
    send_json(&mut alive, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut alive).await["type"], "pong");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_with_1009() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    let big = "x".repeat(70 * 1024);
    let _ = ws.send(Message::text(big)).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_cut_off_without_being_buffered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // No periodic portfolio push: on a loaded machine it could come before the close read below.
    let server = start(GatewayConfig {
        portfolio_interval_secs: 0,
        ..test_config()
    })
    .await;
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            format!(
                "GET /api/v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Read the 101 response head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        read.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Declare a 64 MiB masked text frame, then stream its body.
    const DECLARED: u64 = 64 * 1024 * 1024;
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let writer = tokio::spawn(async move {
        let mut header = vec![0x81_u8, 0xFF];
        header.extend_from_slice(&DECLARED.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        write.write_all(&header).await.unwrap();
        let chunk = vec![b'a' ^ 1; 16 * 1024];
        while counter.load(Ordering::SeqCst) < DECLARED {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    // The server answers with a close frame 1009 long before the frame could have been buffered.
    let mut frame = [0_u8; 4];
    tokio::time::timeout(READ_GUARD, read.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    let accepted = written.load(Ordering::SeqCst);
    writer.abort();
    assert_eq!(frame[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1009);
    assert!(
        accepted < DECLARED / 4,
        "cut off early: {accepted} bytes accepted"
    );
    assert_eq!(
        server
            .gateway
            .metrics()
            .oversized_closes
            .load(Ordering::Relaxed),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_close_with_1003_and_client_close_is_echoed() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    ws.send(Message::binary(vec![1_u8, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);

    let mut ws = server.connect().await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 1000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_closes_a_flooding_client() {
    let server = start(GatewayConfig {
        max_messages_per_sec: 5,
        ..test_config()
    })
    .await;
    let mut ws = server.connect().await;
    for _ in 0..40 {
        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    // The burst is answered, the excess gets `rate_limited` errors, then the close comes.
    let mut pongs = 0;
    let mut warnings = 0;
    let code = loop {
        match support::next_seen(&mut ws).await {
            support::Seen::Json(frame) if frame["type"] == "pong" => pongs += 1,
            support::Seen::Json(frame) if frame["code"] == "rate_limited" => warnings += 1,
            support::Seen::Json(other) => panic!("unexpected {other}"),
            support::Seen::Close(frame) => break frame.map(|f| u16::from(f.code)),
            support::Seen::Ended => panic!("ended without a close frame"),
        }
    };
    assert_eq!(code, Some(1008));
    assert!(pongs >= 5, "{pongs} pongs");
    assert_eq!(warnings, 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_limited_without_affecting_open_ones() {
    let server = start(GatewayConfig {
        max_connections_per_ip: 2,
        ..test_config()
    })
    .await;
    let mut first = server.connect().await;
    let _second = server.connect().await;
    // TC0: the third from the same address is refused with 429 before the upgrade
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
        }
        Ok(_) => panic!("third connection accepted"),
        Err(other) => panic!("{other}"),
    }
    // TC1: the open ones keep working
    send_json(&mut first, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut first).await["type"], "pong");
    // TC2: closing one frees its slot (once its actor has ended)
    first.close(None).await.unwrap();
    drop(first);
    let mut accepted = false;
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(server.url()).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "a slot was freed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_and_unauthenticated_upgrades_are_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = start(GatewayConfig {
        auth: cryptobot_ws_gateway::Authenticator::Tokens(vec![
            cryptobot_ws_gateway::StaticToken {
                name: "test".to_owned(),
                token: "s3cret".to_owned(),
                scopes: vec!["read".to_owned(), "trade".to_owned()],
            },
        ]),
        ..test_config()
    })
    .await;
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(other) => panic!("{other}"),
    };
    // TC0: no token
    assert_eq!(
        status(tokio_tungstenite::connect_async(server.url()).await),
        401
    );
    // TC1: token, but a foreign page's origin
    let mut request = format!("{}?token=s3cret", server.url())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    assert_eq!(status(tokio_tungstenite::connect_async(request).await), 403);
    // TC2: the token as a sub-protocol, as browsers must send it
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "cryptobot.v1, bearer.s3cret".parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "cryptobot.v1");
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    assert_eq!(server.gateway.metrics().upgrades_rejected_total(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_defect_1_the_connection_stays_open_after_the_handshake() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.gateway.open_connections(), 1);
    send_json(&mut ws, json!({"type":"ping","id":1})).await;
    assert_eq!(next_json(&mut ws).await["id"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_defect_2_replies_and_pushes_never_interleave_within_a_frame() {
    let server = start(GatewayConfig {
        max_messages_per_sec: 0,
        ..test_config()
    })
    .await;
    let mut ws = server.connect().await;
    let bus = Arc::clone(&server.bus);
    let publisher = tokio::spawn(async move {
        for id in 1..=300 {
            bus.publish(Event::TradeExecuted(fixtures::trade(
                id, "BTCUSDT", "1", "1",
            )));
            if id % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    for n in 0..100 {
        send_json(&mut ws, json!({"type":"ping","id":n})).await;
    }
    let (mut pongs, mut trades) = (0, 0);
    while pongs < 100 || trades < 300 {
        // next_json panics on a frame that is not whole JSON.
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("pong") => {
                assert_eq!(frame["id"], pongs, "replies in request order");
                pongs += 1;
            }
            Some("trade_notification") => {
                trades += 1;
                assert_eq!(frame["seq"], trades);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_render_in_prometheus_format() {
    let server = start(test_config()).await;
    let _ws = server.connect().await;
    let registry = prometheus::Registry::new();
    server.gateway.register_metrics(&registry).unwrap();
    let out = cryptobot_services::metrics::encode(&registry);
    assert!(out.contains("cryptobot_ws_connections_open 1\n"), "{out}");
    assert!(out.contains("cryptobot_ws_connections_total 1\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_subscriber_exists_before_new_returns() {
    // The hub subscribes in `new`, so an event published right after is not lost.
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    server.bus.publish(alert("first"));
    assert_eq!(next_json(&mut ws).await["payload"]["message"], "first");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_gateway_echoes_text_and_binary_with_the_same_policies() {
    use actix_web::{App, HttpServer};
    use cryptobot_ws_gateway::Gateway;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gateway = Gateway::echo(
        GatewayConfig {
            path: "/".to_owned(),
            ..GatewayConfig::default()
        },
        shutdown.clone(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app_gateway = gateway.clone();
    let server = HttpServer::new(move || {
        let gateway = app_gateway.clone();
        App::new().configure(move |cfg| gateway.configure(cfg))
    })
    .workers(1)
    .disable_signals()
    .shutdown_signal(shutdown.clone().cancelled_owned())
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    ws.send(Message::binary(vec![0_u8, 159, 255]))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match futures_util::StreamExt::next(&mut ws).await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => got.push(m),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got[0], Message::text("héllo"));
    assert_eq!(got[1], Message::binary(vec![0_u8, 159, 255]));
    // Limits still apply: a message above max_message_bytes closes with 1009.
    let _ = ws.send(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), gateway.closed())
        .await
        .unwrap();
}
