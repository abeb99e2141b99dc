//! OHLCV candles aggregated from the market feed's tickers at 1m, 5m, 1h and 1d: the pure book and
//! the history query. The task that feeds the book and stores closed candles is in
//! `market::candle_history` (feature `sqlite`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptobot_domain::{Candle, Interval, Symbol, Ticker};
use rust_decimal::Decimal;

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
