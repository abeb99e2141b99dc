use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Symbol;

/// The trading results of one symbol over the whole trade log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SymbolPerformance {
    /// The pair.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Stats of its trades.
    #[serde(flatten)]
    pub stats: PerformanceStats,
}

/// Sums over a set of trades.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PerformanceStats {
    /// Trades counted, buys and sells.
    pub trades: u64,
    /// Realized profit or loss, fees included (a buy realizes minus its fee).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub realized_pnl: Decimal,
    /// Fees paid, in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub fees: Decimal,
    /// The share (0 to 1, four decimals) of the sells that realized a profit; null without sells.
    /// Sells are the closing trades: a buy only opens or adds, and realizes minus its fee.
    #[serde(
        serialize_with = "rust_decimal::serde::str_option::serialize",
        deserialize_with = "crate::portfolio::optional_decimal"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub win_rate: Option<Decimal>,
    /// Traded notional (`price * quantity`), in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub volume: Decimal,
}

/// `GET /api/v1/performance`: per symbol and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Performance {
    /// One entry per symbol ever traded, by symbol.
    pub symbols: Vec<SymbolPerformance>,
    /// The same sums over every trade.
    pub total: PerformanceStats,
}

/// The trades of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DailyProfit {
    /// The UTC day, `YYYY-MM-DD`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub date: NaiveDate,
    /// Trades executed that day.
    pub trades: u64,
    /// Realized profit or loss that day, fees included.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub realized_pnl: Decimal,
    /// Fees paid that day.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub fees: Decimal,
}

/// Decimals a win rate is rounded to.
const WIN_RATE_DP: u32 = 4;

/// Adds trades up into [`PerformanceStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsAccumulator {
    stats: PerformanceStats,
    sells: u64,
    winning_sells: u64,
}

impl StatsAccumulator {
    /// Counts one trade.
    pub fn add(
        &mut self,
        side: crate::Side,
        fee: Decimal,
        notional: Decimal,
        realized_pnl: Decimal,
    ) {
        self.stats.trades += 1;
        self.stats.fees += fee;
        self.stats.volume += notional;
        self.stats.realized_pnl += realized_pnl;
        if side == crate::Side::Sell {
            self.sells += 1;
            if realized_pnl > Decimal::ZERO {
                self.winning_sells += 1;
            }
        }
    }

    /// The sums so far.
    #[must_use]
    pub fn finish(self) -> PerformanceStats {
        let win_rate = (self.sells > 0).then(|| {
            (Decimal::from(self.winning_sells) / Decimal::from(self.sells))
                .round_dp(WIN_RATE_DP)
                .normalize()
        });
        PerformanceStats {
            win_rate,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::Side;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn win_rate_counts_profitable_sells_only() {
        let mut acc = StatsAccumulator::default();
        acc.add(Side::Buy, dec("0.1"), dec("100"), dec("-0.1"));
        acc.add(Side::Sell, dec("0.1"), dec("110"), dec("9.9"));
        acc.add(Side::Sell, dec("0.1"), dec("90"), dec("-10.1"));
        acc.add(Side::Sell, dec("0.1"), dec("120"), dec("19.9"));
        let stats = acc.finish();
        assert_eq!(stats.trades, 4);
        assert_eq!(stats.fees, dec("0.4"));
        assert_eq!(stats.volume, dec("420"));
        assert_eq!(stats.realized_pnl, dec("19.6"));
        assert_eq!(stats.win_rate, Some(dec("0.6667")));
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["win_rate"], "0.6667");
        assert_eq!(json["realized_pnl"], "19.6");
    }

    #[test]
    fn win_rate_is_null_without_sells() {
        let mut acc = StatsAccumulator::default();
        acc.add(Side::Buy, dec("0.1"), dec("100"), dec("-0.1"));
        let row = SymbolPerformance {
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            stats: acc.finish(),
        };
        let json = serde_json::to_value(&row).unwrap();
        assert!(json["win_rate"].is_null());
        assert_eq!(json["trades"], 1);
        assert_eq!(json["symbol"], "BTCUSDT");
        let back: SymbolPerformance = serde_json::from_value(json).unwrap();
        assert_eq!(back, row);
    }
}
