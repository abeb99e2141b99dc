//! Resume after reconnect over real sockets: exactly the missed events, in order, then live with
//! no gap and no duplicate; snapshots when the history cannot reach back; the shutdown notice.

#![allow(missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{
    Alert, AlertType, Channel, Event, Severity, Signal, SignalAction, fixtures,
};
use cryptobot_services::EventBus;
use serde_json::{Value, json};
use support::*;
use tokio::sync::watch;

/// Events in the whole run; the client drops its socket after [`SEEN_BEFORE`] of them.
const TOTAL: u64 = 100;
const SEEN_BEFORE: u64 = 25;
/// Published (unread) before the socket is dropped, then published while disconnected.
const IN_FLIGHT: u64 = 40;
const WHILE_AWAY: u64 = 60;

fn event(channel: &str, n: u64) -> Event {
    match channel {
        "ticker:BTCUSDT" => Event::Ticker(fixtures::ticker("BTCUSDT", &n.to_string())),
        "trades" => Event::TradeExecuted(fixtures::trade(n, "BTCUSDT", "100", "1")),
        "portfolio" => Event::PortfolioChanged(summary()),
        "signals" => Event::Signal(Signal {
            symbol: fixtures::symbol("BTCUSDT"),
            action: SignalAction::Buy,
            strategy: "sma_crossover".to_owned(),
            price: fixtures::dec("100"),
            confidence: fixtures::dec("0.5"),
            reason: format!("signal {n}"),
            generated_at: fixtures::instant(),
        }),
        "alerts" => Event::Alert(Alert {
            alert_type: AlertType::PriceMove,
            severity: Severity::Info,
            message: format!("alert {n}"),
            symbol: None,
            raised_at: fixtures::instant(),
        }),
        other => panic!("no such channel {other}"),
    }
}

async fn connect_welcome(server: &TestServer) -> (Ws, u64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?welcome=1", server.url()))
        .await
        .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(welcome["version"].is_string());
    assert!(welcome["channels"].is_array());
    (ws, welcome["epoch"].as_u64().expect("an epoch"))
}

/// The `seq` of the next live (not snapshot) event of `channel`.
async fn next_live_seq(ws: &mut Ws, channel: &str) -> u64 {
    loop {
        let frame = next_json(ws).await;
        if frame["channel"] == channel && frame.get("snapshot").is_none() {
            return frame["seq"].as_u64().expect("seq");
        }
    }
}

/// Reads frames until one of `kind`, asserting that no live event of `channel` comes before it.
async fn ack_of(ws: &mut Ws, kind: &str, channel: &str) -> Value {
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(
            frame["channel"] != channel || frame.get("snapshot").is_some(),
            "a live event before the ack: {frame}"
        );
    }
}

/// Disconnects mid-stream while events keep flowing, reconnects with the last seq and checks that
/// the union of what both connections delivered is exactly 1..=TOTAL (for a ticker: the newest
/// missed one, then every live one).
async fn reconnect_misses_nothing(channel: &'static str, standalone: bool) {
    let server = start(test_config()).await;
    let (mut ws, epoch) = connect_welcome(&server).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "payload": {"channels": [channel]}}),
    )
    .await;
    assert_eq!(ack_of(&mut ws, "subscribed", channel).await["epoch"], epoch);
    let mut seen = Vec::new();
    for n in 1..=SEEN_BEFORE {
        server.publish(event(channel, n));
        seen.push(next_live_seq(&mut ws, channel).await);
    }
    // Mid-stream: these are on their way when the socket goes away.
    for n in SEEN_BEFORE + 1..=IN_FLIGHT {
        server.publish(event(channel, n));
    }
    drop(ws);
    for n in IN_FLIGHT + 1..=WHILE_AWAY {
        server.publish(event(channel, n));
    }

    let (mut ws, same_epoch) = connect_welcome(&server).await;
    assert_eq!(same_epoch, epoch);
    // Events keep flowing while the client resumes. Tickers are conflated by design for a reader
    // that falls behind, so their publisher waits for each update to arrive before the next; the
    // other channels are published freely.
    let (progress_tx, progress) = watch::channel(0_u64);
    let bus = Arc::clone(&server.bus);
    let paced = channel.starts_with("ticker:");
    let publisher = tokio::spawn(async move {
        let mut progress = progress;
        for n in WHILE_AWAY + 1..=TOTAL {
            bus.publish(event(channel, n));
            if paced {
                tokio::time::timeout(READ_GUARD, progress.wait_for(|seen| *seen >= n))
                    .await
                    .expect("hang guard")
                    .expect("reader alive");
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let last_seq = json!({channel: SEEN_BEFORE});
    let (request, reply) = if standalone {
        (
            json!({"type": "resume", "id": 1, "payload": {"epoch": epoch, "last_seq": last_seq}}),
            "resumed",
        )
    } else {
        (
            json!({"type": "subscribe", "id": 1, "payload": {"channels": [channel], "resume": {"epoch": epoch, "last_seq": last_seq}}}),
            "subscribed",
        )
    };
    send_json(&mut ws, request).await;
    let ack = ack_of(&mut ws, reply, channel).await;
    assert_eq!(ack["recovered"][channel], true, "{ack}");
    assert_eq!(ack["epoch"], epoch);
    assert_eq!(ack["id"], 1);
    while seen.last() != Some(&TOTAL) {
        let seq = next_live_seq(&mut ws, channel).await;
        seen.push(seq);
        progress_tx.send_replace(seq);
    }
    publisher.await.unwrap();
    if paced {
        // Tickers are conflated by contract: the resume sends the newest one (not every tick
        // missed), then every live one, in order.
        let before = usize::try_from(SEEN_BEFORE).unwrap();
        assert_eq!(seen[..before], (1..=SEEN_BEFORE).collect::<Vec<_>>());
        let resumed = &seen[before..];
        assert!(
            resumed[0] >= WHILE_AWAY,
            "the newest ticker first, not a replay of the missed ones: {resumed:?}"
        );
        assert_eq!(
            resumed,
            (resumed[0]..=TOTAL).collect::<Vec<_>>(),
            "then live, no gap, no duplicate"
        );
    } else {
        assert_eq!(
            seen,
            (1..=TOTAL).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_ticker_gets_the_newest_then_everything_live() {
    reconnect_misses_nothing("ticker:BTCUSDT", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_trades_misses_nothing() {
    reconnect_misses_nothing("trades", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_portfolio_misses_nothing() {
    reconnect_misses_nothing("portfolio", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_signals_misses_nothing() {
    reconnect_misses_nothing("signals", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_alerts_misses_nothing() {
    reconnect_misses_nothing("alerts", true).await;
}

/// Reads the ack and the frames that follow until `n` frames of the given channels were seen.
async fn frames_after_ack(ws: &mut Ws, kind: &str) -> (Value, Vec<Value>) {
    let ack = ack_of(ws, kind, "").await;
    let mut frames = Vec::new();
    for _ in 0..2 {
        frames.push(next_json(ws).await);
    }
    (ack, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_beyond_the_history_or_from_another_epoch_sends_snapshots() {
    let server = start(test_config()).await;
    let history = 1000;
    for n in 1..=history + 10 {
        server.publish(event("ticker:BTCUSDT", n));
        server.publish(event("portfolio", n));
        server.publish(event("trades", n));
    }
    let epoch = server.bus.epoch();
    for (tc, resume_epoch, last) in [
        // TC0: the history (1000 per channel) no longer reaches back to seq 5
        ("beyond history", epoch, 5),
        // TC1: another epoch: the seq values mean nothing here, even recent ones
        ("other epoch", epoch + 1, history + 9),
    ] {
        let (mut ws, _) = connect_welcome(&server).await;
        send_json(
            &mut ws,
            json!({"type": "resume", "payload": {"epoch": resume_epoch, "last_seq": {"ticker:BTCUSDT": last, "portfolio": last, "trades": last}}}),
        )
        .await;
        let (ack, frames) = frames_after_ack(&mut ws, "resumed").await;
        assert_eq!(
            ack["recovered"],
            json!({"ticker:BTCUSDT": false, "portfolio": false, "trades": false}),
            "{tc}"
        );
        // A fresh snapshot instead of a partial replay: the full portfolio, the latest ticker.
        let portfolio = &frames[0];
        assert_eq!(portfolio["type"], "portfolio_update", "{tc}: {portfolio}");
        assert_eq!(portfolio["snapshot"], true, "{tc}");
        assert_eq!(portfolio["seq"], history + 10, "{tc}");
        let ticker = &frames[1];
        assert_eq!(ticker["type"], "ticker_update", "{tc}: {ticker}");
        assert_eq!(ticker["seq"], history + 10, "{tc}");
        assert_eq!(
            ticker["payload"]["price"],
            (history + 10).to_string(),
            "{tc}"
        );
        // Live continues right after the channel's current seq.
        let trades = server.bus.last_seq(&Channel::Trades);
        server.publish(event("trades", 0));
        assert_eq!(next_live_seq(&mut ws, "trades").await, trades + 1, "{tc}");
        server.publish(event("trades", 0));
        assert_eq!(next_live_seq(&mut ws, "trades").await, trades + 2, "{tc}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_ahead_of_the_channel_is_not_recovered() {
    let server = start(test_config()).await;
    server.publish(event("signals", 1));
    let (mut ws, epoch) = connect_welcome(&server).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "payload": {"channels": ["signals"], "resume": {"epoch": epoch, "last_seq": {"signals": 7, "alerts": 0}}}}),
    )
    .await;
    let ack = ack_of(&mut ws, "subscribed", "").await;
    // TC0: ahead of the channel: no silent replay; TC1: nothing missed: recovered, nothing sent
    assert_eq!(ack["recovered"], json!({"signals": false, "alerts": true}));
    server.publish(event("signals", 2));
    server.publish(event("alerts", 1));
    assert_eq!(next_live_seq(&mut ws, "signals").await, 2);
    assert_eq!(next_live_seq(&mut ws, "alerts").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_errors_change_nothing() {
    let server = start(test_config()).await;
    let mut ws = server.connect().await;
    // TC0: unknown channel in last_seq; TC1: unknown symbol; TC2: a seq that is not a number
    for (payload, code) in [
        (
            json!({"epoch": 1, "last_seq": {"fills": 1}}),
            "unknown_channel",
        ),
        (
            json!({"epoch": 1, "last_seq": {"ticker:DOGEUSDT": 1}}),
            "unknown_symbol",
        ),
        (
            json!({"epoch": 1, "last_seq": {"trades": "1"}}),
            "invalid_payload",
        ),
    ] {
        send_json(
            &mut ws,
            json!({"type": "resume", "id": 3, "payload": payload}),
        )
        .await;
        let reply = next_json(&mut ws).await;
        assert_eq!(
            (reply["code"].as_str(), &reply["id"]),
            (Some(code), &json!(3))
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_shutdown_sends_a_notice_then_1001() {
    let server = start(test_config()).await;
    let (mut ws, epoch) = connect_welcome(&server).await;
    let mut plain = server.connect().await;
    server.shutdown.cancel();
    for ws in [&mut ws, &mut plain] {
        let notice = tokio::time::timeout(Duration::from_secs(1), next_json(ws))
            .await
            .expect("notice within a second");
        assert_eq!(notice["type"], "server_shutdown", "{notice}");
        assert_eq!(notice["epoch"], epoch);
        assert!(notice["reason"].is_string());
        let code = tokio::time::timeout(Duration::from_secs(1), close_code(ws))
            .await
            .expect("close within a second");
        assert_eq!(code, 1001);
    }
    server.stop().await;
}

/// A client closed for being too slow resumes on a new connection and gets exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_resumes_after_its_close_and_misses_nothing() {
    let server = start(cryptobot_ws_gateway::GatewayConfig {
        event_buffer: 64,
        send_timeout_ms: 500,
        ..test_config()
    })
    .await;
    // Only for the epoch: a held connection that never speaks is a slow consumer too.
    let (watcher, epoch) = connect_welcome(&server).await;
    drop(watcher);
    // Subscribed to `alerts` by default; it never reads until it has been closed.
    let mut slow = server.connect_small_buffer().await;
    let slow_closes = || {
        server
            .gateway
            .metrics()
            .slow_consumer_closes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut published = 0_u64;
    while slow_closes() == 0 {
        assert!(
            published < 900,
            "the slow client should have been closed by now"
        );
        // Large alerts fill the socket buffers within a few hundred events, well inside the
        // history the resume needs (1000 per channel by default).
        for _ in 0..30 {
            published += 1;
            server.publish(Event::Alert(Alert {
                alert_type: AlertType::PriceMove,
                severity: Severity::Info,
                message: format!("alert {published} {}", "x".repeat(4000)),
                symbol: None,
                raised_at: fixtures::instant(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the slow client did get: a gap-free prefix, then the end of the connection.
    let mut last_seen = 0;
    while let Seen::Json(frame) = next_seen(&mut slow).await {
        if frame["channel"] == "alerts" {
            assert_eq!(frame["seq"], last_seen + 1, "no silent gap");
            last_seen += 1;
        }
    }
    assert!(last_seen < published, "it cannot have kept up");

    let (mut ws, same_epoch) = connect_welcome(&server).await;
    assert_eq!(same_epoch, epoch);
    send_json(
        &mut ws,
        json!({"type": "resume", "payload": {"epoch": epoch, "last_seq": {"alerts": last_seen}}}),
    )
    .await;
    let ack = ack_of(&mut ws, "resumed", "alerts").await;
    assert_eq!(ack["recovered"]["alerts"], true, "{ack}");
    for expected in last_seen + 1..=published {
        assert_eq!(next_live_seq(&mut ws, "alerts").await, expected);
    }
    server.stop().await;
}
