use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Symbol;

/// The latest market state of one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticker {
    /// The trading pair.
    pub symbol: Symbol,
    /// Last traded price, in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Best bid.
    #[serde(with = "rust_decimal::serde::str")]
    pub bid: Decimal,
    /// Best ask.
    #[serde(with = "rust_decimal::serde::str")]
    pub ask: Decimal,
    /// Traded base volume over the last 24 hours (for the simulator: since it started).
    #[serde(with = "rust_decimal::serde::str")]
    pub volume_24h: Decimal,
    /// Price change over the last 24 hours, in percent (for the simulator: since it started).
    #[serde(with = "rust_decimal::serde::str")]
    pub change_24h_pct: Decimal,
    /// When this state was observed.
    pub updated_at: DateTime<Utc>,
}
