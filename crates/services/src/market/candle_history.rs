//! The candle history (closed candles from SQLite, the open one from the live book) and the task
//! that feeds the book from the bus, stores closed candles and publishes them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use cryptobot_domain::{Candle, Event, Interval, Symbol};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::candles::{CANDLE_UPDATE_INTERVAL, CandleBook, CandleQuery, MAX_CANDLES_LIMIT};
use crate::trading::Storage;
use crate::{Clock, EventBus, ServiceError};

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
