use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{ClientOrderId, DomainError, Symbol, money};

/// Direction of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Spend quote asset to get base asset.
    Buy,
    /// Give base asset to get quote asset.
    Sell,
}

impl Side {
    /// Returns `"buy"` or `"sell"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// How much to trade: a base quantity, or (the seed's `ExecutePurchase(symbol, amount)`) an
/// amount of quote asset to spend or receive, fees included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSize {
    /// Base-asset quantity, e.g. `0.01` BTC.
    Quantity(#[serde(with = "rust_decimal::serde::str")] Decimal),
    /// Quote-asset amount, e.g. `100` USDT.
    Amount(#[serde(with = "rust_decimal::serde::str")] Decimal),
}

impl OrderSize {
    /// Checks the size is positive.
    ///
    /// # Errors
    /// [`DomainError::NotPositive`] for zero or negative sizes.
    pub fn validate(self) -> Result<Self, DomainError> {
        match self {
            Self::Quantity(q) => money::ensure_positive("quantity", q).map(Self::Quantity),
            Self::Amount(a) => money::ensure_positive("amount", a).map(Self::Amount),
        }
    }
}

/// Who or what asked for a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeOrigin {
    /// A person or bot through the REST API or the WebSocket.
    Manual,
    /// The bot itself, following a signal (`trading.auto_trade`).
    Auto,
    /// A stop-loss level was crossed.
    StopLoss,
    /// A take-profit level was crossed.
    TakeProfit,
}

impl TradeOrigin {
    /// Returns the snake_case name used on the wire and in storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Auto => "auto",
            Self::StopLoss => "stop_loss",
            Self::TakeProfit => "take_profit",
        }
    }

    /// Parses the name produced by [`TradeOrigin::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Manual, Self::Auto, Self::StopLoss, Self::TakeProfit]
            .into_iter()
            .find(|origin| origin.as_str() == name)
    }
}

/// A validated command to trade at market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRequest {
    /// The pair to trade.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Quantity or quote amount.
    pub size: OrderSize,
    /// Idempotency key: a repeat with the same key returns the first result.
    pub client_order_id: Option<ClientOrderId>,
    /// Who asked.
    pub origin: TradeOrigin,
}

impl TradeRequest {
    /// Builds a request, checking the size.
    ///
    /// # Errors
    /// [`DomainError::NotPositive`] for a zero or negative size.
    pub fn new(
        symbol: Symbol,
        side: Side,
        size: OrderSize,
        client_order_id: Option<ClientOrderId>,
        origin: TradeOrigin,
    ) -> Result<Self, DomainError> {
        Ok(Self {
            symbol,
            side,
            size: size.validate()?,
            client_order_id,
            origin,
        })
    }
}

/// An executed (filled) trade, as committed to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// Storage id, increasing in execution order.
    pub id: u64,
    /// The pair traded.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Execution price.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Base quantity traded.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Fee paid, in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    pub fee: Decimal,
    /// `price * quantity`, before fees.
    #[serde(with = "rust_decimal::serde::str")]
    pub notional: Decimal,
    /// Profit or loss this trade realized, fees included (a buy realizes minus its fee).
    #[serde(with = "rust_decimal::serde::str")]
    pub realized_pnl: Decimal,
    /// When it was executed.
    pub executed_at: DateTime<Utc>,
    /// The idempotency key it was executed under, if any.
    pub client_order_id: Option<ClientOrderId>,
    /// Who asked for it.
    pub origin: TradeOrigin,
}

/// The seed's `BoughtCoin`: the trade fields its `trade_notification` payload carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoughtCoin {
    /// The pair traded.
    pub symbol: Symbol,
    /// Execution price.
    #[serde(with = "rust_decimal::serde::str")]
    pub purchase_price: Decimal,
    /// Base quantity.
    #[serde(with = "rust_decimal::serde::str")]
    pub quantity: Decimal,
    /// Execution time.
    pub purchased_at: DateTime<Utc>,
}

impl From<&Trade> for BoughtCoin {
    fn from(trade: &Trade) -> Self {
        Self {
            symbol: trade.symbol.clone(),
            purchase_price: trade.price,
            quantity: trade.quantity,
            purchased_at: trade.executed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn order_size_serializes_as_tagged_decimal_string() {
        let size = OrderSize::Amount(Decimal::from_str("100.5").unwrap());
        assert_eq!(
            serde_json::to_string(&size).unwrap(),
            r#"{"amount":"100.5"}"#
        );
        let back: OrderSize = serde_json::from_str(r#"{"quantity":"0.01"}"#).unwrap();
        assert_eq!(
            back,
            OrderSize::Quantity(Decimal::from_str("0.01").unwrap())
        );
        // TC1: JSON numbers are refused: money never passes through a float
        assert!(serde_json::from_str::<OrderSize>(r#"{"quantity":0.01}"#).is_err());
    }

    #[test]
    fn rejects_non_positive_sizes() {
        let symbol = Symbol::parse("BTCUSDT").unwrap();
        for size in [
            OrderSize::Quantity(Decimal::ZERO),
            OrderSize::Amount(Decimal::NEGATIVE_ONE),
        ] {
            let err = TradeRequest::new(symbol.clone(), Side::Buy, size, None, TradeOrigin::Manual)
                .unwrap_err();
            assert_eq!(err.code(), "invalid_size");
        }
    }

    #[test]
    fn origin_names_round_trip() {
        for origin in [
            TradeOrigin::Manual,
            TradeOrigin::Auto,
            TradeOrigin::StopLoss,
            TradeOrigin::TakeProfit,
        ] {
            assert_eq!(TradeOrigin::from_name(origin.as_str()), Some(origin));
        }
        assert_eq!(TradeOrigin::from_name("bogus"), None);
    }
}
