//! `[trading]`: the paper account, read by the paper trading engine, and the two keys of the
//! auto-trader that spends from it.

use rust_decimal::Decimal;
use serde::Deserialize;

use super::matching::MatchRules;

/// Settings of paper trading (`[trading]`); missing keys take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TradingConfig {
    /// Cash of a new account. Default 10 000. Ignored (with a warning) once the storage holds an
    /// account.
    #[serde(deserialize_with = "crate::config::decimal")]
    pub initial_cash: Decimal,
    /// Fee charged on every trade's notional; `0 <= fee_rate < 1`. Default 0.001 (0.1 %).
    #[serde(deserialize_with = "crate::config::decimal")]
    pub fee_rate: Decimal,
    /// Smallest order notional in the quote asset; smaller orders are `order_too_small`.
    /// Default 1.
    #[serde(deserialize_with = "crate::config::decimal")]
    pub min_notional: Decimal,
    /// Open (resting) orders the account may hold at once; more are `too_many_orders`.
    /// Default 200.
    pub max_open_orders: usize,
    /// Whether the auto-trader follows the strategy's signals with paper trades, until paused or
    /// resumed at runtime (the stored state then wins). Default true.
    pub auto_trade: bool,
    /// Quote amount each automatic buy spends; greater than zero. Default 100.
    #[serde(deserialize_with = "crate::config::decimal")]
    pub auto_trade_amount: Decimal,
}

impl Default for TradingConfig {
    fn default() -> Self {
        Self {
            initial_cash: Decimal::from(10_000),
            fee_rate: Decimal::new(1, 3),
            min_notional: Decimal::ONE,
            max_open_orders: 200,
            auto_trade: true,
            auto_trade_amount: Decimal::ONE_HUNDRED,
        }
    }
}

impl TradingConfig {
    /// The rules order matching applies to every fill.
    #[must_use]
    pub const fn match_rules(&self) -> MatchRules {
        MatchRules {
            fee_rate: self.fee_rate,
            min_notional: self.min_notional,
        }
    }

    /// Checks the ranges: `initial_cash >= 0`, `0 <= fee_rate < 1`, `min_notional >= 0`,
    /// `auto_trade_amount > 0`.
    ///
    /// # Errors
    /// A message naming the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_cash < Decimal::ZERO {
            return Err(format!(
                "initial_cash must not be negative, got {}",
                self.initial_cash
            ));
        }
        if !(Decimal::ZERO..Decimal::ONE).contains(&self.fee_rate) {
            return Err(format!(
                "fee_rate must be at least 0 and below 1, got {}",
                self.fee_rate
            ));
        }
        if self.min_notional < Decimal::ZERO {
            return Err(format!(
                "min_notional must not be negative, got {}",
                self.min_notional
            ));
        }
        if self.auto_trade_amount <= Decimal::ZERO {
            return Err(format!(
                "auto_trade_amount must be greater than zero, got {}",
                self.auto_trade_amount
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::dec;

    use super::*;

    #[test]
    fn default_config_is_valid_and_matches_the_documented_values() {
        let config = TradingConfig::default();
        assert_eq!(config.initial_cash, dec("10000"));
        assert_eq!(config.fee_rate, dec("0.001"));
        assert_eq!(config.min_notional, dec("1"));
        assert_eq!(config.max_open_orders, 200);
        assert!(config.auto_trade);
        assert_eq!(config.auto_trade_amount, dec("100"));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(
            config.match_rules(),
            MatchRules {
                fee_rate: dec("0.001"),
                min_notional: dec("1")
            }
        );
    }

    #[test]
    fn config_out_of_range_is_refused() {
        let base = TradingConfig::default();
        let cases = [
            // TC0: negative cash
            (
                TradingConfig {
                    initial_cash: dec("-1"),
                    ..base.clone()
                },
                "initial_cash",
            ),
            // TC1: fee of 100 %
            (
                TradingConfig {
                    fee_rate: Decimal::ONE,
                    ..base.clone()
                },
                "fee_rate",
            ),
            // TC2: negative fee
            (
                TradingConfig {
                    fee_rate: dec("-0.001"),
                    ..base.clone()
                },
                "fee_rate",
            ),
            // TC3: negative minimum
            (
                TradingConfig {
                    min_notional: dec("-1"),
                    ..base.clone()
                },
                "min_notional",
            ),
            // TC4: an automatic buy that spends nothing, even with auto-trading off
            (
                TradingConfig {
                    auto_trade: false,
                    auto_trade_amount: Decimal::ZERO,
                    ..base
                },
                "auto_trade_amount",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.starts_with(key), "{config:?}: {err}");
        }
    }
}
