//! The candle history (closed candles from SQLite, the open one from the live book) and the task
//! that feeds the book from the bus, stores closed candles and publishes them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use cryptobot_domain::{Candle, Event, Interval, Symbol};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::candles::{CANDLE_UPDATE_INTERVAL, CandleBook, CandleQuery, MAX_CANDLES_LIMIT};
use crate::trading::Storage;
use crate::{Clock, EventBus, ServiceError, Subscription};

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

/// The aggregator: applies every ticker on the bus to the book, persists each closed candle and
/// then publishes it (`Event::Candle` with `closed: true`, never conflated), and publishes each
/// changed open candle at most every [`CANDLE_UPDATE_INTERVAL`]. Candles are timed by the clock,
/// not by the feed's timestamps. Tickers missed in a lag only cost a candle some highs or lows.
pub struct CandleAggregator {
    book: Arc<Mutex<CandleBook>>,
    storage: Storage,
    events: Subscription,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    /// Symbols whose open candles changed since the last update was published.
    changed: BTreeSet<Symbol>,
}

impl std::fmt::Debug for CandleAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleAggregator")
            .field("changed", &self.changed)
            .finish_non_exhaustive()
    }
}

impl CandleAggregator {
    /// Builds the aggregator, subscribed to `bus` before this returns, and the history handle
    /// that reads its book and `storage`; it stops when `shutdown` is cancelled.
    #[must_use]
    pub fn new(
        bus: Arc<dyn EventBus>,
        storage: Storage,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> (CandleHistory, Self) {
        let book = Arc::new(Mutex::new(CandleBook::default()));
        let history = CandleHistory {
            book: Arc::clone(&book),
            storage: storage.clone(),
        };
        let aggregator = Self {
            book,
            storage,
            events: Subscription::new(bus.subscribe(), "candle aggregator"),
            bus,
            clock,
            shutdown,
            changed: BTreeSet::new(),
        };
        (history, aggregator)
    }

    /// Runs the aggregator on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Aggregates until the shutdown token is cancelled or the bus closes.
    pub async fn run(mut self) {
        // The first tick a full interval from now: an immediate one would race the first tickers
        // (select! picks at random) and publish an update of the first of them alone.
        let mut timer = tokio::time::interval_at(
            tokio::time::Instant::now() + CANDLE_UPDATE_INTERVAL,
            CANDLE_UPDATE_INTERVAL,
        );
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let closed = tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = timer.tick() => {
                    self.publish_updates().await;
                    continue;
                }
                received = self.events.next() => match received {
                    Some(envelope) => {
                        let Event::Ticker(ticker) = &envelope.event else { continue };
                        self.changed.insert(ticker.symbol.clone());
                        self.lock_book().on_ticker(ticker, self.clock.now())
                    }
                    None => break,
                },
            };
            persist_and_publish(&self.storage, &*self.bus, closed).await;
        }
        tracing::debug!("candle aggregator stopped");
    }

    fn lock_book(&self) -> std::sync::MutexGuard<'_, CandleBook> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the candles whose interval ended and publishes the open candles that changed.
    async fn publish_updates(&mut self) {
        let now = self.clock.now();
        let (closed, open) = {
            let mut book = self.lock_book();
            let closed = book.close_due(now);
            let open: Vec<Candle> = self
                .changed
                .iter()
                .flat_map(|symbol| {
                    Interval::ALL
                        .into_iter()
                        .filter_map(|interval| book.open_candle(symbol, interval).cloned())
                })
                .collect();
            (closed, open)
        };
        self.changed.clear();
        persist_and_publish(&self.storage, &*self.bus, closed).await;
        for candle in open {
            self.bus.publish(Event::Candle(candle));
        }
    }
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
