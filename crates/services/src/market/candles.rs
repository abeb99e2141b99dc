//! OHLCV candles aggregated from the market feed's tickers at 1m, 5m, 1h and 1d: a pure book, the
//! task that feeds it from the bus, publishes candles and persists the closed ones, and the history
//! handle the REST API and the gateway read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptobot_domain::{Candle, Event, Interval, Symbol, Ticker};
use rust_decimal::Decimal;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::trading::Storage;
use crate::{Clock, EventBus, ServiceError};

/// Open-candle updates of one channel are published at most this often (closed candles at once):
/// conflation at the source, so a channel carries about one update a second, not one per tick.
pub const CANDLE_UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Default and largest number of candles one history request returns.
pub const DEFAULT_CANDLES_LIMIT: usize = 500;
/// Largest `limit` of a history request.
pub const MAX_CANDLES_LIMIT: usize = 1000;

/// The open candle of every symbol and interval. Pure: time comes in with each call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CandleBook {
    open: BTreeMap<(Symbol, Interval), Candle>,
    /// The feed's cumulative volume at the last ticker, per symbol.
    last_volume: BTreeMap<Symbol, Decimal>,
}

impl CandleBook {
    /// Applies a ticker seen at `now` to the open candle of each interval. Returns the candles it
    /// closed (a ticker of a later interval closes the open one and opens the next at its price).
    ///
    /// Volume is how much the feed's `volume_24h` grew since the symbol's previous ticker; a
    /// decrease (Binance's rolling 24-hour volume can fall) counts as zero, and the first ticker
    /// of a symbol adds none.
    pub fn on_ticker(&mut self, ticker: &Ticker, now: DateTime<Utc>) -> Vec<Candle> {
        if ticker.price <= Decimal::ZERO {
            return Vec::new();
        }
        let grown = self
            .last_volume
            .insert(ticker.symbol.clone(), ticker.volume_24h)
            .map_or(Decimal::ZERO, |last| {
                (ticker.volume_24h - last).max(Decimal::ZERO)
            });
        let mut closed = Vec::new();
        for interval in Interval::ALL {
            let start = interval.start_of(now);
            let key = (ticker.symbol.clone(), interval);
            match self.open.get_mut(&key) {
                Some(candle) if candle.open_time >= start => {
                    candle.high = candle.high.max(ticker.price);
                    candle.low = candle.low.min(ticker.price);
                    candle.close = ticker.price;
                    candle.volume += grown;
                }
                previous => {
                    if let Some(previous) = previous {
                        let mut done = previous.clone();
                        done.closed = true;
                        closed.push(done);
                    }
                    self.open.insert(
                        key,
                        Candle {
                            symbol: ticker.symbol.clone(),
                            interval,
                            open_time: start,
                            open: ticker.price,
                            high: ticker.price,
                            low: ticker.price,
                            close: ticker.price,
                            volume: grown,
                            closed: false,
                        },
                    );
                }
            }
        }
        closed
    }

    /// Closes every open candle whose interval ended at or before `now` (no ticker came to close
    /// it); the next ticker of its symbol opens a new one. Quiet intervals get no candle.
    pub fn close_due(&mut self, now: DateTime<Utc>) -> Vec<Candle> {
        let due: Vec<(Symbol, Interval)> = self
            .open
            .iter()
            .filter(|(_, candle)| {
                candle.open_time + chrono::TimeDelta::seconds(candle.interval.secs()) <= now
            })
            .map(|(key, _)| key.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| self.open.remove(&key))
            .map(|mut candle| {
                candle.closed = true;
                candle
            })
            .collect()
    }

    /// The open candle of `symbol` at `interval`.
    #[must_use]
    pub fn open_candle(&self, symbol: &Symbol, interval: Interval) -> Option<&Candle> {
        self.open.get(&(symbol.clone(), interval))
    }
}

/// What a candle history request asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CandleQuery {
    /// The pair.
    pub symbol: Symbol,
    /// The interval.
    pub interval: Interval,
    /// Most candles returned, 1-1000.
    pub limit: usize,
    /// Only candles opened before this time (exclusive); none for up to now (the open candle
    /// included).
    pub end: Option<DateTime<Utc>>,
}

/// The candle history: closed candles from storage, the open one from the live book. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct CandleHistory {
    book: Arc<Mutex<CandleBook>>,
    storage: Storage,
}

impl CandleHistory {
    /// The candles matching `query`, oldest first (the newest last), at most `query.limit`.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the database fails.
    pub async fn candles(&self, query: CandleQuery) -> Result<Vec<Candle>, ServiceError> {
        let open = self
            .open_candle(&query.symbol, query.interval)
            .filter(|candle| query.end.is_none_or(|end| candle.open_time < end));
        let limit = query.limit.clamp(1, MAX_CANDLES_LIMIT);
        let stored_limit = limit - usize::from(open.is_some());
        let storage = self.storage.clone();
        let mut candles = tokio::task::spawn_blocking(move || {
            storage.load_candles(&query.symbol, query.interval, query.end, stored_limit)
        })
        .await
        .map_err(|err| ServiceError::Storage(format!("storage task failed: {err}")))??;
        if let Some(open) = open {
            // A closed candle of the same interval start cannot be stored yet: it is open.
            candles.retain(|candle| candle.open_time != open.open_time);
            candles.push(open);
        }
        Ok(candles)
    }

    /// The open candle of `symbol` at `interval`, if a ticker came in this interval.
    #[must_use]
    pub fn open_candle(&self, symbol: &Symbol, interval: Interval) -> Option<Candle> {
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open_candle(symbol, interval)
            .cloned()
    }
}

/// Spawns the aggregator: subscribes to `bus` before returning, applies every ticker to the book,
/// persists each closed candle and then publishes it (`Event::Candle` with `closed: true`, never
/// conflated), and publishes each changed open candle at most every [`CANDLE_UPDATE_INTERVAL`].
/// Candles are timed by `clock`, not by the feed's timestamps.
#[must_use]
pub fn spawn_candles(
    bus: Arc<dyn EventBus>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> (CandleHistory, JoinHandle<()>) {
    let book = Arc::new(Mutex::new(CandleBook::default()));
    let history = CandleHistory {
        book: Arc::clone(&book),
        storage: storage.clone(),
    };
    let mut events = bus.subscribe();
    let task = tokio::spawn(async move {
        // The first tick a full interval from now: an immediate one would race the first tickers
        // (select! picks at random) and publish an update of the first of them alone.
        let mut timer = tokio::time::interval_at(
            tokio::time::Instant::now() + CANDLE_UPDATE_INTERVAL,
            CANDLE_UPDATE_INTERVAL,
        );
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changed: BTreeSet<Symbol> = BTreeSet::new();
        loop {
            let closed = tokio::select! {
                () = shutdown.cancelled() => break,
                _ = timer.tick() => {
                    let now = clock.now();
                    let (closed, open) = {
                        let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
                        let closed = book.close_due(now);
                        let open: Vec<Candle> = changed
                            .iter()
                            .flat_map(|symbol| {
                                Interval::ALL
                                    .into_iter()
                                    .filter_map(|interval| book.open_candle(symbol, interval).cloned())
                            })
                            .collect();
                        (closed, open)
                    };
                    changed.clear();
                    persist_and_publish(&storage, &*bus, closed).await;
                    for candle in open {
                        bus.publish(Event::Candle(candle));
                    }
                    continue;
                }
                received = events.recv() => match received {
                    Ok(envelope) => {
                        let Event::Ticker(ticker) = &envelope.event else { continue };
                        changed.insert(ticker.symbol.clone());
                        book.lock().unwrap_or_else(PoisonError::into_inner).on_ticker(ticker, clock.now())
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // Tickers only: a candle misses some highs or lows, nothing else.
                        tracing::warn!(missed, "candle aggregator lagged behind the bus");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            persist_and_publish(&storage, &*bus, closed).await;
        }
        tracing::debug!("candle aggregator stopped");
    });
    (history, task)
}

/// Stores closed candles (so the history survives a restart), then publishes them.
async fn persist_and_publish(storage: &Storage, bus: &dyn EventBus, closed: Vec<Candle>) {
    if closed.is_empty() {
        return;
    }
    let store = storage.clone();
    let records = closed.clone();
    let saved = tokio::task::spawn_blocking(move || store.save_candles(&records)).await;
    if !matches!(saved, Ok(Ok(()))) {
        // Published anyway: live clients lose nothing; only the history has a hole.
        tracing::error!(count = closed.len(), "could not store closed candles");
    }
    for candle in closed {
        bus.publish(Event::Candle(candle));
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, symbol};

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn tick(price: &str, volume: &str) -> Ticker {
        Ticker {
            volume_24h: dec(volume),
            ..cryptobot_domain::fixtures::ticker("BTCUSDT", price)
        }
    }

    /// 2024-01-01T00:00:00Z: a boundary of every interval.
    const T0: i64 = 1_704_067_200;

    #[test]
    fn ticks_build_ohlcv_and_a_new_interval_closes_the_candle() {
        let mut book = CandleBook::default();
        // TC0: first tick opens every interval's candle, without volume
        assert!(book.on_ticker(&tick("100", "1000"), at(T0 + 1)).is_empty());
        assert!(
            book.on_ticker(&tick("105", "1002.5"), at(T0 + 20))
                .is_empty()
        );
        assert!(book.on_ticker(&tick("98", "1003"), at(T0 + 40)).is_empty());
        // TC1: a falling cumulative volume adds nothing
        assert!(book.on_ticker(&tick("101", "900"), at(T0 + 59)).is_empty());
        let m1 = book
            .open_candle(&symbol("BTCUSDT"), Interval::M1)
            .unwrap()
            .clone();
        assert_eq!(
            (
                m1.open,
                m1.high,
                m1.low,
                m1.close,
                m1.volume,
                m1.open_time,
                m1.closed
            ),
            (
                dec("100"),
                dec("105"),
                dec("98"),
                dec("101"),
                dec("3"),
                at(T0),
                false
            )
        );
        // TC2: the first tick of the next minute closes the 1m candle only
        let closed = book.on_ticker(&tick("102", "901"), at(T0 + 60));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0], Candle { closed: true, ..m1 });
        let m1 = book.open_candle(&symbol("BTCUSDT"), Interval::M1).unwrap();
        assert_eq!(
            (m1.open, m1.volume, m1.open_time),
            (dec("102"), dec("1"), at(T0 + 60))
        );
        let m5 = book.open_candle(&symbol("BTCUSDT"), Interval::M5).unwrap();
        assert_eq!(
            (m5.open, m5.high, m5.close, m5.volume),
            (dec("100"), dec("105"), dec("102"), dec("4"))
        );
        // TC3: a tick an hour later closes 1m, 5m and 1h
        let closed = book.on_ticker(&tick("110", "901"), at(T0 + 3_600));
        let intervals: Vec<Interval> = closed.iter().map(|c| c.interval).collect();
        assert_eq!(intervals, [Interval::M1, Interval::M5, Interval::H1]);
        assert!(closed.iter().all(|c| c.closed));
    }

    #[test]
    fn time_passing_without_ticks_closes_candles_and_leaves_gaps() {
        let mut book = CandleBook::default();
        book.on_ticker(&tick("100", "1"), at(T0 + 10));
        // TC0: before the end nothing closes; at the end exactly the 1m closes
        assert!(book.close_due(at(T0 + 59)).is_empty());
        let closed = book.close_due(at(T0 + 60));
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].interval, closed[0].close),
            (Interval::M1, dec("100"))
        );
        assert!(book.open_candle(&symbol("BTCUSDT"), Interval::M1).is_none());
        // TC1: closing again is a no-op; the next tick opens the minute it falls in
        assert!(book.close_due(at(T0 + 61)).is_empty());
        assert!(book.on_ticker(&tick("90", "1"), at(T0 + 185)).is_empty());
        let m1 = book.open_candle(&symbol("BTCUSDT"), Interval::M1).unwrap();
        assert_eq!((m1.open_time, m1.open), (at(T0 + 180), dec("90")));
        // TC2: a day later, everything closes
        let closed = book.close_due(at(T0 + 86_400));
        assert_eq!(closed.len(), 4);
    }
}
