use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{DomainError, Symbol, money};

/// An open holding of one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Position {
    /// The pair held.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Base quantity held (always positive: a position with zero quantity is closed and removed).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub quantity: Decimal,
    /// Quantity-weighted average buy price, fees excluded (`cost_basis / quantity`, rounded to
    /// money scale; for display only, all arithmetic uses `cost_basis`).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub avg_entry_price: Decimal,
    /// What the held quantity cost, fees excluded. Kept exactly (money scale), so that
    /// `cash + sum(cost_basis) = initial_cash + realized_pnl` holds to the last digit.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub cost_basis: Decimal,
    /// Sell everything when the price falls to or below this level.
    #[serde(
        serialize_with = "rust_decimal::serde::str_option::serialize",
        deserialize_with = "optional_decimal"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub stop_loss: Option<Decimal>,
    /// Sell everything when the price rises to or above this level.
    #[serde(
        serialize_with = "rust_decimal::serde::str_option::serialize",
        deserialize_with = "optional_decimal"
    )]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub take_profit: Option<Decimal>,
}

/// Reads an optional decimal string (`null` or `"1.5"`). Unlike `str_option` it also works inside
/// `#[serde(flatten)]` ([`PositionValuation`]), where `null` arrives as a unit value.
pub(crate) fn optional_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|text| text.parse::<Decimal>().map_err(serde::de::Error::custom))
        .transpose()
}

impl Position {
    /// Returns the level crossed by `price`, if any: stop-loss first, since it protects capital.
    #[must_use]
    pub fn triggered_level(&self, price: Decimal) -> Option<crate::TradeOrigin> {
        if self.stop_loss.is_some_and(|level| price <= level) {
            Some(crate::TradeOrigin::StopLoss)
        } else if self.take_profit.is_some_and(|level| price >= level) {
            Some(crate::TradeOrigin::TakeProfit)
        } else {
            None
        }
    }
}

/// One field of a [`PositionUpdate`]: absent keeps the level, `null` clears it, a decimal string
/// sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LevelChange {
    /// Leave the level as it is (field absent).
    #[default]
    Keep,
    /// Remove the level (field `null`).
    Clear,
    /// Set the level.
    Set(Decimal),
}

impl LevelChange {
    /// Applies the change to the current level.
    #[must_use]
    pub const fn apply(self, current: Option<Decimal>) -> Option<Decimal> {
        match self {
            Self::Keep => current,
            Self::Clear => None,
            Self::Set(level) => Some(level),
        }
    }
}

/// One level of a [`PositionUpdateInput`] as the client wrote it: absent, `null` or text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LevelInput {
    /// The field is absent.
    #[default]
    Keep,
    /// The field is `null`.
    Clear,
    /// The field is a string, not yet checked against the decimal grammar.
    Set(String),
}

impl<'de> Deserialize<'de> for LevelInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Reached only when the field is present (absent fields use `Default`), so `None` is `null`.
        let level: Option<String> = Option::deserialize(deserializer)?;
        Ok(level.map_or(Self::Clear, Self::Set))
    }
}

impl LevelInput {
    fn parse(self, field: &'static str) -> Result<LevelChange, DomainError> {
        Ok(match self {
            Self::Keep => LevelChange::Keep,
            Self::Clear => LevelChange::Clear,
            Self::Set(text) => LevelChange::Set(money::parse_decimal(field, &text)?),
        })
    }
}

/// The body of a level change as a client writes it (REST `PATCH /positions/{symbol}`, WebSocket
/// `update_position`): the shape is checked by serde, the decimals by [`PositionUpdateInput::parse`],
/// so both paths answer a malformed level with `invalid_decimal`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionUpdateInput {
    /// New stop-loss level.
    #[serde(default)]
    pub stop_loss: LevelInput,
    /// New take-profit level.
    #[serde(default)]
    pub take_profit: LevelInput,
}

impl PositionUpdateInput {
    /// Checks the levels against the decimal grammar (stop-loss first).
    ///
    /// # Errors
    /// [`DomainError::InvalidDecimal`].
    pub fn parse(self) -> Result<PositionUpdate, DomainError> {
        Ok(PositionUpdate {
            stop_loss: self.stop_loss.parse("stop_loss")?,
            take_profit: self.take_profit.parse("take_profit")?,
        })
    }
}

impl TryFrom<PositionUpdateInput> for PositionUpdate {
    type Error = DomainError;

    fn try_from(input: PositionUpdateInput) -> Result<Self, DomainError> {
        input.parse()
    }
}

/// A change to a position's stop-loss and take-profit levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "PositionUpdateInput")]
pub struct PositionUpdate {
    /// New stop-loss level.
    pub stop_loss: LevelChange,
    /// New take-profit level.
    pub take_profit: LevelChange,
}

impl PositionUpdate {
    /// Applies the update to a position, checking the resulting levels are positive and that the
    /// stop-loss is below the take-profit.
    ///
    /// # Errors
    /// [`DomainError::NotPositive`] or [`DomainError::InvalidLevels`]; the position is unchanged.
    pub fn apply_to(self, position: &Position) -> Result<Position, DomainError> {
        let stop_loss = self.stop_loss.apply(position.stop_loss);
        let take_profit = self.take_profit.apply(position.take_profit);
        if let Some(level) = stop_loss {
            money::ensure_positive("stop_loss", level)?;
        }
        if let Some(level) = take_profit {
            money::ensure_positive("take_profit", level)?;
        }
        if let (Some(sl), Some(tp)) = (stop_loss, take_profit)
            && sl >= tp
        {
            return Err(DomainError::InvalidLevels(format!(
                "stop_loss {sl} must be below take_profit {tp}"
            )));
        }
        Ok(Position {
            stop_loss,
            take_profit,
            ..position.clone()
        })
    }
}

/// A position valued at the latest market price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PositionValuation {
    /// The position itself.
    #[serde(flatten)]
    pub position: Position,
    /// Latest price used for the valuation (the entry price when no price is known yet).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub market_price: Decimal,
    /// `quantity * market_price`.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub market_value: Decimal,
    /// `market_value - cost_basis`.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub unrealized_pnl: Decimal,
}

impl PositionValuation {
    /// Values a position at `market_price`.
    #[must_use]
    pub fn new(position: Position, market_price: Decimal) -> Self {
        let market_value = money::round_money(position.quantity * market_price);
        let unrealized_pnl = market_value - position.cost_basis;
        Self {
            position,
            market_price,
            market_value,
            unrealized_pnl,
        }
    }
}

/// Cash, positions and profit of the paper account at one moment.
///
/// Invariant: `total_value = cash + positions_value` and, for an account that started with
/// `initial_cash`, `total_value = initial_cash + realized_pnl + unrealized_pnl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortfolioSummary {
    /// Free quote-asset cash.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub cash: Decimal,
    /// Open positions, sorted by symbol.
    pub positions: Vec<PositionValuation>,
    /// Sum of the positions' market values.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub positions_value: Decimal,
    /// `cash + positions_value`.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub total_value: Decimal,
    /// Profit realized by all trades so far, fees included.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub realized_pnl: Decimal,
    /// Sum of the positions' unrealized profit.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub unrealized_pnl: Decimal,
    /// Fees paid so far.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub fees_paid: Decimal,
    /// Number of trades executed so far.
    pub trade_count: u64,
    /// What open orders hold back: cash for buys, quantities for sells.
    #[serde(default)]
    pub reserved: Reserved,
    /// When the summary was computed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub as_of: DateTime<Utc>,
}

/// Funds held back by open orders: they cannot be spent by another order or trade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reserved {
    /// Cash held for open buys (cost at their price plus fee); part of `cash`.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub cash: Decimal,
    /// `cash` minus the reserved cash: what a new buy may spend.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub available_cash: Decimal,
    /// Base quantity held for open sells, per symbol (only symbols with a reservation).
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, crate::openapi::DecimalText>))]
    pub quantities: std::collections::BTreeMap<crate::Symbol, ReservedQuantity>,
}

/// A quantity held back for open sells, as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservedQuantity(#[serde(with = "rust_decimal::serde::str")] pub Decimal);

impl PortfolioSummary {
    /// Builds a summary from cash and valued positions, deriving the totals.
    #[must_use]
    pub fn new(
        cash: Decimal,
        mut positions: Vec<PositionValuation>,
        realized_pnl: Decimal,
        fees_paid: Decimal,
        trade_count: u64,
        as_of: DateTime<Utc>,
    ) -> Self {
        positions.sort_by(|a, b| a.position.symbol.cmp(&b.position.symbol));
        let positions_value = positions.iter().map(|p| p.market_value).sum::<Decimal>();
        let unrealized_pnl = positions.iter().map(|p| p.unrealized_pnl).sum::<Decimal>();
        Self {
            cash,
            total_value: cash + positions_value,
            positions,
            positions_value,
            realized_pnl,
            unrealized_pnl,
            fees_paid,
            trade_count,
            reserved: Reserved {
                available_cash: cash,
                ..Reserved::default()
            },
            as_of,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::TradeOrigin;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn position() -> Position {
        Position {
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            quantity: d("0.5"),
            avg_entry_price: d("100"),
            cost_basis: d("50"),
            stop_loss: Some(d("90")),
            take_profit: None,
        }
    }

    #[test]
    fn level_change_distinguishes_absent_null_and_value() {
        let update: PositionUpdate = serde_json::from_str(r#"{"stop_loss":null}"#).unwrap();
        assert_eq!(update.stop_loss, LevelChange::Clear);
        assert_eq!(update.take_profit, LevelChange::Keep);
        let update: PositionUpdate = serde_json::from_str(r#"{"take_profit":"120.5"}"#).unwrap();
        assert_eq!(update.take_profit, LevelChange::Set(d("120.5")));
        // TC2: floats and unknown fields are refused
        assert!(serde_json::from_str::<PositionUpdate>(r#"{"take_profit":120.5}"#).is_err());
        assert!(serde_json::from_str::<PositionUpdate>(r#"{"stop":"1"}"#).is_err());
        // TC3: the decimal grammar, with its own code through the input type
        let input: PositionUpdateInput =
            serde_json::from_str(r#"{"stop_loss":"1_000","take_profit":"1e3"}"#).unwrap();
        assert_eq!(
            input.parse().unwrap_err(),
            DomainError::InvalidDecimal {
                field: "stop_loss",
                reason: "no separators or spaces allowed"
            }
        );
        assert!(serde_json::from_str::<PositionUpdate>(r#"{"take_profit":"+5"}"#).is_err());
    }

    #[test]
    fn update_checks_levels() {
        let keep_sl = PositionUpdate {
            take_profit: LevelChange::Set(d("150")),
            ..PositionUpdate::default()
        };
        let updated = keep_sl.apply_to(&position()).unwrap();
        assert_eq!(
            (updated.stop_loss, updated.take_profit),
            (Some(d("90")), Some(d("150")))
        );
        // TC1: take-profit below stop-loss
        let inverted = PositionUpdate {
            take_profit: LevelChange::Set(d("80")),
            ..PositionUpdate::default()
        };
        assert_eq!(
            inverted.apply_to(&position()).unwrap_err().code(),
            "invalid_levels"
        );
        // TC2: negative level
        let negative = PositionUpdate {
            stop_loss: LevelChange::Set(d("-1")),
            ..PositionUpdate::default()
        };
        assert_eq!(
            negative.apply_to(&position()).unwrap_err().code(),
            "invalid_size"
        );
    }

    #[test]
    fn triggered_level_prefers_stop_loss() {
        let mut p = position();
        p.take_profit = Some(d("110"));
        assert_eq!(p.triggered_level(d("90")), Some(TradeOrigin::StopLoss));
        assert_eq!(p.triggered_level(d("95")), None);
        assert_eq!(p.triggered_level(d("110")), Some(TradeOrigin::TakeProfit));
    }

    #[test]
    fn summary_derives_totals() {
        let valued = PositionValuation::new(position(), d("110"));
        assert_eq!(valued.market_value, d("55"));
        assert_eq!(valued.unrealized_pnl, d("5"));
        let summary =
            PortfolioSummary::new(d("950"), vec![valued], d("-0.05"), d("0.05"), 1, Utc::now());
        assert_eq!(summary.total_value, d("1005"));
        assert_eq!(summary.unrealized_pnl, d("5"));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["positions"][0]["symbol"], "BTCUSDT");
        assert_eq!(json["positions"][0]["market_value"], "55");
        assert_eq!(json["cash"], "950");
    }
}
