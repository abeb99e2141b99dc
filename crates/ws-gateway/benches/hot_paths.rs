//! Micro-benchmarks of the gateway's hot paths: one event to its JSON frame, the fan-out of one
//! frame to many subscribers, and the parsing of an inbound message. `cargo bench -p
//! cryptobot-ws-gateway`; results and the machine are in docs/benchmarks.md.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use cryptobot_domain::{Channel, Event, fixtures};
use cryptobot_services::Envelope;
use cryptobot_ws_gateway::outbox::Outbox;
use cryptobot_ws_gateway::{ClientMessage, frame_bytes};

fn ticker_envelope() -> Envelope {
    let ticker = fixtures::ticker("BTCUSDT", "42000.5");
    Envelope {
        channel: Channel::Ticker(ticker.symbol.clone()),
        seq: 123_456,
        ts_us: 1_704_067_200_000_000,
        event: Event::Ticker(ticker),
    }
}

fn trade_envelope() -> Envelope {
    Envelope {
        channel: Channel::Trades,
        seq: 42,
        ts_us: 1_704_067_200_000_000,
        event: Event::TradeExecuted(fixtures::trade(12, "BTCUSDT", "42000.5", "0.01")),
    }
}

/// Serializing one event into the frame every subscriber shares (done once per event).
fn event_to_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_to_frame");
    let ticker = ticker_envelope();
    group.bench_function("ticker_update", |b| {
        b.iter(|| frame_bytes(black_box(&ticker)));
    });
    let trade = trade_envelope();
    group.bench_function("trade_notification", |b| {
        b.iter(|| frame_bytes(black_box(&trade)));
    });
    group.finish();
}

/// One frame to N connections through the delivery core a worker's fan-out uses: offered to each
/// connection's outbox (a ticker into its slot, an event into its FIFO) and taken out again as the
/// writer does, without sockets. Per subscriber, this is the user-space cost of delivery before
/// actix-ws.
fn fan_out(c: &mut Criterion) {
    let ticker = frame_bytes(&ticker_envelope());
    let trade = frame_bytes(&trade_envelope());
    let symbol = fixtures::symbol("BTCUSDT");
    let channels = [Channel::Trades, Channel::Portfolio, Channel::Alerts];
    let mut group = c.benchmark_group("fan_out");
    for subscribers in [100_usize, 1_000, 10_000] {
        group.bench_with_input(
            BenchmarkId::new("outbox_ticker", subscribers),
            &subscribers,
            |b, &n| {
                let mut outboxes: Vec<Outbox> = (0..n)
                    .map(|_| {
                        let mut outbox = Outbox::new(1024, &channels, false);
                        outbox.watch(&symbol);
                        outbox
                    })
                    .collect();
                let mut seq = 0;
                b.iter(|| {
                    seq += 1;
                    for outbox in &mut outboxes {
                        outbox.ticker(&symbol, seq, 0, ticker.clone());
                        black_box(outbox.pop());
                    }
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("outbox_event", subscribers),
            &subscribers,
            |b, &n| {
                let mut outboxes: Vec<Outbox> = (0..n)
                    .map(|_| Outbox::new(1024, &channels, false))
                    .collect();
                let mut seq = 0;
                b.iter(|| {
                    seq += 1;
                    for outbox in &mut outboxes {
                        let _ = outbox.event(&Channel::Trades, seq, false, trade.clone());
                        black_box(outbox.pop());
                    }
                });
            },
        );
    }
    group.finish();
}

/// Parsing one inbound client message (every message a client sends goes through this).
fn parse_inbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_inbound");
    let cases = [
        ("ping", r#"{"type":"ping","id":9}"#),
        (
            "subscribe",
            r#"{"type":"subscribe","payload":{"channels":["ticker:BTCUSDT","ticker:ETHUSDT","signals"]},"id":3}"#,
        ),
        (
            "manual_trade",
            r#"{"type":"manual_trade","id":"t1","payload":{"symbol":"BTCUSDT","side":"buy","quantity":"0.01","client_order_id":"web-7f3a"}}"#,
        ),
        (
            "malformed",
            r#"{"type":"manual_trade","payload":{"symbol":12"#,
        ),
    ];
    for (name, text) in cases {
        group.bench_function(name, |b| {
            b.iter_batched(
                || text,
                |text| ClientMessage::parse(black_box(text)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, event_to_frame, fan_out, parse_inbound);
criterion_main!(benches);
