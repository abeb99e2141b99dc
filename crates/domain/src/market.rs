use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Symbol;

/// The latest market state of one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticker {
    /// The trading pair.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Last traded price, in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub price: Decimal,
    /// Best bid.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub bid: Decimal,
    /// Best ask.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub ask: Decimal,
    /// Traded base volume over the last 24 hours (for the simulator: since it started).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub volume_24h: Decimal,
    /// Price change over the last 24 hours, in percent (for the simulator: since it started).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub change_24h_pct: Decimal,
    /// When this state was observed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: DateTime<Utc>,
}

/// A candle interval: `1m`, `5m`, `1h` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Interval {
    /// One minute.
    #[serde(rename = "1m")]
    M1,
    /// Five minutes.
    #[serde(rename = "5m")]
    M5,
    /// One hour.
    #[serde(rename = "1h")]
    H1,
    /// One day (UTC).
    #[serde(rename = "1d")]
    D1,
}

impl Interval {
    /// Every interval, shortest first.
    pub const ALL: [Self; 4] = [Self::M1, Self::M5, Self::H1, Self::D1];

    /// The name used on the wire and in storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::H1 => "1h",
            Self::D1 => "1d",
        }
    }

    /// Parses the name produced by [`Interval::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|interval| interval.as_str() == name)
    }

    /// The length in seconds.
    #[must_use]
    pub const fn secs(self) -> i64 {
        match self {
            Self::M1 => 60,
            Self::M5 => 300,
            Self::H1 => 3_600,
            Self::D1 => 86_400,
        }
    }

    /// The start of the interval `time` falls in (intervals are aligned to the Unix epoch, so a
    /// day starts at 00:00 UTC).
    #[must_use]
    pub fn start_of(self, time: DateTime<Utc>) -> DateTime<Utc> {
        let secs = time.timestamp();
        let start = secs - secs.rem_euclid(self.secs());
        DateTime::from_timestamp(start, 0).unwrap_or(time)
    }
}

/// An OHLCV candle of one symbol and interval, keyed by the interval's start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Candle {
    /// The pair.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Its interval.
    pub interval: Interval,
    /// Start of the interval (inclusive).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub open_time: DateTime<Utc>,
    /// First price of the interval.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub open: Decimal,
    /// Highest price.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub high: Decimal,
    /// Lowest price.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub low: Decimal,
    /// Last price.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub close: Decimal,
    /// Base volume traded in the interval: how much the feed's cumulative volume grew.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub volume: Decimal,
    /// True once the interval is over: the candle no longer changes.
    pub closed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_start_on_their_boundaries() {
        let at = |secs: i64| DateTime::from_timestamp(secs, 123_000_000).unwrap();
        let start = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap();
        // 2024-01-01T13:47:59.123Z
        let t = 1_704_116_879;
        // TC0: each interval, its start
        assert_eq!(Interval::M1.start_of(at(t)), start(1_704_116_820));
        assert_eq!(Interval::M5.start_of(at(t)), start(1_704_116_700));
        assert_eq!(Interval::H1.start_of(at(t)), start(1_704_114_000));
        assert_eq!(Interval::D1.start_of(at(t)), start(1_704_067_200));
        // TC1: a boundary belongs to the interval it starts
        assert_eq!(
            Interval::M1.start_of(start(1_704_116_820)),
            start(1_704_116_820)
        );
        for interval in Interval::ALL {
            assert_eq!(Interval::from_name(interval.as_str()), Some(interval));
        }
        assert_eq!(Interval::from_name("2m"), None);
    }
}
