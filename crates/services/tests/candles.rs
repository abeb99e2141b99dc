//! The candle aggregator as a task: tickers from a real bus, time from a manual clock (and paused
//! tokio time for its timer), closed candles persisted to a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cryptobot_domain::fixtures::{self, dec, symbol};
use cryptobot_domain::{Candle, Channel, Event, Interval};
use cryptobot_services::market::{CandleAggregator, CandleHistory, CandleQuery};
use cryptobot_services::trading::Storage;
use cryptobot_services::{Clock, Envelope, EventBus, InMemoryBus, ManualClock};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// 2024-01-01T00:00:00Z, a boundary of every interval.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).unwrap()
}

async fn next_candle(events: &mut broadcast::Receiver<Arc<Envelope>>) -> (u64, Candle) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let envelope = events.recv().await.expect("bus open");
            if let Event::Candle(candle) = &envelope.event {
                return (envelope.seq, candle.clone());
            }
        }
    })
    .await
    .expect("a candle in time")
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir()
        .join(format!(
            "cryptobot-candles-{name}-{}-{nanos}",
            std::process::id()
        ))
        .join("db.sqlite")
}

/// The aggregator on `bus` and `storage`, started; its history, token and task.
fn start(
    bus: &Arc<dyn EventBus>,
    storage: Storage,
    clock: &Arc<ManualClock>,
) -> (
    CandleHistory,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let shutdown = CancellationToken::new();
    let (history, aggregator) = CandleAggregator::new(
        Arc::clone(bus),
        storage,
        Arc::clone(clock) as Arc<dyn Clock>,
        shutdown.clone(),
    );
    (history, shutdown, aggregator.spawn())
}

#[tokio::test(start_paused = true)]
async fn ticks_become_conflated_updates_and_closed_candles_that_survive_a_restart() {
    let path = temp_db("task");
    let clock = Arc::new(ManualClock::new(t0() + TimeDelta::seconds(5)));
    let bus: Arc<dyn EventBus> =
        Arc::new(InMemoryBus::new(1024, Arc::clone(&clock) as Arc<dyn Clock>));
    let storage = Storage::open(path.to_str().unwrap()).unwrap();
    let (history, shutdown, task) = start(&bus, storage, &clock);
    let mut events = bus.subscribe();
    // TC0: many ticks within a second give one update per channel, at the timer
    for price in ["100", "103", "99", "101"] {
        bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", price)));
    }
    tokio::task::yield_now().await;
    let m1 = Channel::Candles(symbol("BTCUSDT"), Interval::M1);
    let mut updates = Vec::new();
    for _ in 0..4 {
        updates.push(next_candle(&mut events).await);
    }
    let (seq, open) = updates
        .iter()
        .find(|(_, c)| c.interval == Interval::M1)
        .cloned()
        .unwrap();
    assert_eq!(seq, 1, "one update on the 1m channel, not four");
    assert_eq!(
        (
            open.open,
            open.high,
            open.low,
            open.close,
            open.closed,
            open.open_time
        ),
        (dec("100"), dec("103"), dec("99"), dec("101"), false, t0())
    );
    assert_eq!(bus.last_seq(&m1), 1);
    assert_eq!(
        history.open_candle(&symbol("BTCUSDT"), Interval::M1),
        Some(open.clone())
    );
    // TC1: the minute ends with no tick: the timer closes the candle, stored and published
    clock.set(t0() + TimeDelta::seconds(60));
    tokio::time::advance(Duration::from_secs(1)).await;
    let (seq, closed) = next_candle(&mut events).await;
    assert_eq!(seq, 2);
    assert_eq!(
        closed,
        Candle {
            closed: true,
            ..open.clone()
        }
    );
    // TC2: the next tick opens the next minute; history lists the closed one, then the open
    clock.set(t0() + TimeDelta::seconds(75));
    bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "110")));
    tokio::time::advance(Duration::from_secs(1)).await;
    let query = CandleQuery {
        symbol: symbol("BTCUSDT"),
        interval: Interval::M1,
        limit: 500,
        end: None,
    };
    let listed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let listed = history.candles(query.clone()).await.unwrap();
            if listed.len() == 2 {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(listed[0], closed);
    assert_eq!(
        (listed[1].open, listed[1].closed, listed[1].open_time),
        (dec("110"), false, t0() + TimeDelta::seconds(60))
    );
    // TC3: `end` cuts before; `limit` keeps the newest
    let before = history
        .candles(CandleQuery {
            end: Some(t0() + TimeDelta::seconds(60)),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(before, std::slice::from_ref(&closed));
    let newest = history
        .candles(CandleQuery {
            limit: 1,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert!(!newest[0].closed);
    shutdown.cancel();
    task.await.unwrap();

    // TC4: after a restart the closed candle is back (the open one is not: it was never closed)
    let storage = Storage::open(path.to_str().unwrap()).unwrap();
    let (history, shutdown, task) = start(&bus, storage, &clock);
    assert_eq!(history.candles(query).await.unwrap(), [closed]);
    shutdown.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
