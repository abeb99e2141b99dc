use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{ClientOrderId, DomainError, Symbol, money};

/// Direction of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The one size a client wrote (`quantity` or `amount`, as text), picked but not read yet: the
/// quantity-or-amount rule of every trading command (REST bodies, WebSocket payloads), split in
/// two steps so the other fields are checked in between (docs/protocol.md "Order of checks").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeText<'a> {
    text: &'a str,
    amount: bool,
}

impl<'a> SizeText<'a> {
    /// Picks the size from the two optional fields: exactly one must be given.
    ///
    /// # Errors
    /// [`DomainError::SizeRequired`] for both or neither.
    pub const fn pick(
        quantity: Option<&'a str>,
        amount: Option<&'a str>,
    ) -> Result<Self, DomainError> {
        match (quantity, amount) {
            (Some(text), None) => Ok(Self {
                text,
                amount: false,
            }),
            (None, Some(text)) => Ok(Self { text, amount: true }),
            _ => Err(DomainError::SizeRequired),
        }
    }

    /// True for a quote `amount`, false for a base `quantity`.
    #[must_use]
    pub const fn is_amount(self) -> bool {
        self.amount
    }

    /// Reads the decimal (the grammar of [`money::parse_decimal`], named after its field); its
    /// sign is checked by [`OrderSize::validate`], after the other decimals of the command.
    ///
    /// # Errors
    /// [`DomainError::InvalidDecimal`] naming `quantity` or `amount`.
    pub fn parse(self) -> Result<OrderSize, DomainError> {
        if self.amount {
            money::parse_decimal("amount", self.text).map(OrderSize::Amount)
        } else {
            money::parse_decimal("quantity", self.text).map(OrderSize::Quantity)
        }
    }
}

/// Who or what asked for a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TradeOrigin {
    /// A person or bot through the REST API or the WebSocket.
    Manual,
    /// The bot itself, following a signal (`trading.auto_trade`).
    Auto,
    /// A stop-loss level was crossed.
    StopLoss,
    /// A take-profit level was crossed.
    TakeProfit,
    /// A person or bot closed the whole position (`force_exit`, `POST /api/v1/positions/{symbol}/exit`).
    ForceExit,
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
            Self::ForceExit => "force_exit",
        }
    }

    /// Parses the name produced by [`TradeOrigin::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Manual,
            Self::Auto,
            Self::StopLoss,
            Self::TakeProfit,
            Self::ForceExit,
        ]
        .into_iter()
        .find(|origin| origin.as_str() == name)
    }
}

/// A validated command to trade at market. The fields are private so that every request passed
/// [`TradeRequest::new`]'s checks (a positive size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeRequest {
    symbol: Symbol,
    side: Side,
    size: OrderSize,
    /// Idempotency key: a repeat with the same key returns the first result.
    client_order_id: Option<ClientOrderId>,
    origin: TradeOrigin,
    /// The name of the principal that sent the command (a token's name), for the trade's log
    /// line; `None` for the bot's own and the stop-loss/take-profit trades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_by: Option<String>,
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
            requested_by: None,
        })
    }

    /// The same request, sent by the principal named `name`.
    #[must_use]
    pub fn requested_by_principal(mut self, name: impl Into<String>) -> Self {
        self.requested_by = Some(name.into());
        self
    }

    /// Who sent the command, when a principal did.
    #[must_use]
    pub fn requested_by(&self) -> Option<&str> {
        self.requested_by.as_deref()
    }

    /// The pair to trade.
    #[must_use]
    pub const fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// Buy or sell.
    #[must_use]
    pub const fn side(&self) -> Side {
        self.side
    }

    /// Quantity or quote amount, positive.
    #[must_use]
    pub const fn size(&self) -> OrderSize {
        self.size
    }

    /// Idempotency key: a repeat with the same key returns the first result.
    #[must_use]
    pub const fn client_order_id(&self) -> Option<&ClientOrderId> {
        self.client_order_id.as_ref()
    }

    /// Who asked.
    #[must_use]
    pub const fn origin(&self) -> TradeOrigin {
        self.origin
    }
}

/// Reads a request through [`TradeRequest::new`], so a serialized one is checked again.
impl<'de> Deserialize<'de> for TradeRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            symbol: Symbol,
            side: Side,
            size: OrderSize,
            client_order_id: Option<ClientOrderId>,
            origin: TradeOrigin,
            #[serde(default)]
            requested_by: Option<String>,
        }
        let f = Fields::deserialize(deserializer)?;
        let request = Self::new(f.symbol, f.side, f.size, f.client_order_id, f.origin)
            .map_err(serde::de::Error::custom)?;
        Ok(match f.requested_by {
            Some(name) => request.requested_by_principal(name),
            None => request,
        })
    }
}

/// A trade command as a client writes it (REST body, WebSocket `manual_trade` payload): every
/// field as text, so that both paths validate in the same order with the same codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeInput {
    /// The pair, e.g. `BTCUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Base-asset quantity, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// Quote-asset amount, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<String>,
}

impl TradeInput {
    /// Validates the command, in this order (docs/api.md "Order of checks"): exactly one of
    /// `quantity`/`amount`, the symbol's spelling, the `client_order_id`, the decimal's grammar,
    /// the size being positive.
    ///
    /// # Errors
    /// [`DomainError::SizeRequired`], [`DomainError::InvalidSymbol`],
    /// [`DomainError::InvalidClientOrderId`], [`DomainError::InvalidDecimal`] or
    /// [`DomainError::NotPositive`], the first that applies.
    pub fn into_request(self, origin: TradeOrigin) -> Result<TradeRequest, DomainError> {
        let size = SizeText::pick(self.quantity.as_deref(), self.amount.as_deref())?;
        let symbol = Symbol::parse(&self.symbol)?;
        let client_order_id = ClientOrderId::parse_optional(self.client_order_id.as_deref())?;
        let size = size.parse()?;
        TradeRequest::new(symbol, self.side, size, client_order_id, origin)
    }
}

/// An executed (filled) trade, as committed to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trade {
    /// Storage id, increasing in execution order.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub id: u64,
    /// The pair traded.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Execution price.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub price: Decimal,
    /// Base quantity traded.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub quantity: Decimal,
    /// Fee paid, in the quote asset.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub fee: Decimal,
    /// `price * quantity`, before fees.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub notional: Decimal,
    /// Profit or loss this trade realized, fees included (a buy realizes minus its fee).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub realized_pnl: Decimal,
    /// When it was executed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub executed_at: DateTime<Utc>,
    /// The idempotency key it was executed under, if any.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_client_order_id, required = true))]
    pub client_order_id: Option<ClientOrderId>,
    /// Who asked for it.
    #[cfg_attr(feature = "openapi", schema(inline))]
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

/// What `GET /api/v1/trades` asks for: filters, a cursor and a page size. Every filter is
/// optional and they combine (all must hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeQuery {
    /// Only trades of this symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<Symbol>,
    /// Only the trade executed under this idempotency key (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<ClientOrderId>,
    /// Only trades executed at or after this time (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Only trades executed before this time (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Cursor: only trades with a smaller id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<u64>,
    /// Cursor: only trades with a larger id; the page is then oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<u64>,
    /// Largest number of trades in the page.
    pub limit: usize,
}

impl TradeQuery {
    /// The `limit` newest trades, no filter.
    #[must_use]
    pub const fn latest(limit: usize) -> Self {
        Self {
            symbol: None,
            client_order_id: None,
            from: None,
            to: None,
            before_id: None,
            after_id: None,
            limit,
        }
    }

    /// True when the page runs oldest first (`after_id` given), false for newest first.
    #[must_use]
    pub const fn ascending(&self) -> bool {
        self.after_id.is_some()
    }

    /// Whether `trade` passes every filter and the cursor.
    #[must_use]
    pub fn matches(&self, trade: &Trade) -> bool {
        self.symbol.as_ref().is_none_or(|s| *s == trade.symbol)
            && self
                .client_order_id
                .as_ref()
                .is_none_or(|id| trade.client_order_id.as_ref() == Some(id))
            && self.from.is_none_or(|from| trade.executed_at >= from)
            && self.to.is_none_or(|to| trade.executed_at < to)
            && self.before_id.is_none_or(|id| trade.id < id)
            && self.after_id.is_none_or(|id| trade.id > id)
    }
}

/// One page of trades.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradePage {
    /// The trades, newest first (oldest first with `after_id`).
    pub trades: Vec<Trade>,
    /// True when more trades match beyond this page (continue from the last one's id).
    pub more: bool,
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
    fn trade_input_checks_in_one_order() {
        let input =
            |symbol: &str, quantity: Option<&str>, amount: Option<&str>, id: Option<&str>| {
                TradeInput {
                    symbol: symbol.to_owned(),
                    side: Side::Buy,
                    quantity: quantity.map(str::to_owned),
                    amount: amount.map(str::to_owned),
                    client_order_id: id.map(str::to_owned),
                }
                .into_request(TradeOrigin::Manual)
                .map_err(|err| err.code())
            };
        // TC0: valid
        let request = input("BTCUSDT", None, Some("100.5"), Some("a-1")).unwrap();
        assert_eq!(
            request.size,
            OrderSize::Amount(Decimal::from_str("100.5").unwrap())
        );
        // TC1: each check, and the first failing one wins when several fail
        let cases = [
            (
                ("btc", Some("1"), Some("1"), Some("bad id!")),
                "invalid_payload",
            ),
            (("btc", None, None, None), "invalid_payload"),
            (
                ("btc", Some("1e3"), None, Some("bad id!")),
                "invalid_symbol",
            ),
            (
                ("BTCUSDT", Some("1e3"), None, Some("bad id!")),
                "invalid_client_order_id",
            ),
            (
                ("BTCUSDT", Some("1e3"), None, Some("")),
                "invalid_client_order_id",
            ),
            (
                ("BTCUSDT", Some("1_000"), None, Some("ok")),
                "invalid_decimal",
            ),
            (("BTCUSDT", Some("-1"), None, None), "invalid_decimal"),
            (("BTCUSDT", Some("0"), None, None), "invalid_size"),
        ];
        for ((symbol, quantity, amount, id), code) in cases {
            assert_eq!(
                input(symbol, quantity, amount, id).unwrap_err(),
                code,
                "{symbol} {quantity:?} {amount:?} {id:?}"
            );
        }
        let long = "a".repeat(65);
        assert_eq!(
            input("BTCUSDT", Some("1"), None, Some(&long)).unwrap_err(),
            "invalid_client_order_id"
        );
    }

    #[test]
    fn trade_query_filters_and_cursors_combine() {
        let trade = |id: u64, symbol: &str, secs: i64| Trade {
            id,
            symbol: Symbol::parse(symbol).unwrap(),
            side: Side::Buy,
            price: Decimal::ONE,
            quantity: Decimal::ONE,
            fee: Decimal::ZERO,
            notional: Decimal::ONE,
            realized_pnl: Decimal::ZERO,
            executed_at: DateTime::from_timestamp(secs, 0).unwrap(),
            client_order_id: None,
            origin: TradeOrigin::Manual,
        };
        let query = TradeQuery {
            symbol: Some(Symbol::parse("ETHUSDT").unwrap()),
            from: DateTime::from_timestamp(100, 0),
            to: DateTime::from_timestamp(200, 0),
            before_id: Some(50),
            ..TradeQuery::latest(10)
        };
        // TC0: all hold; from is inclusive
        assert!(query.matches(&trade(10, "ETHUSDT", 100)));
        // TC1: each filter alone refuses; to is exclusive
        assert!(!query.matches(&trade(10, "BTCUSDT", 150)));
        assert!(!query.matches(&trade(10, "ETHUSDT", 99)));
        assert!(!query.matches(&trade(10, "ETHUSDT", 200)));
        assert!(!query.matches(&trade(50, "ETHUSDT", 150)));
        assert!(!query.ascending());
        let after = TradeQuery {
            after_id: Some(5),
            ..TradeQuery::latest(10)
        };
        assert!(after.ascending());
        assert!(!after.matches(&trade(5, "ETHUSDT", 150)));
        assert!(after.matches(&trade(6, "ETHUSDT", 150)));
    }

    #[test]
    fn size_text_takes_exactly_one_size_and_names_its_field() {
        let dec = |text| Decimal::from_str(text).unwrap();
        // TC0: one size, read with its own field's name
        let quantity = SizeText::pick(Some("0.5"), None).unwrap();
        assert!(!quantity.is_amount());
        assert_eq!(quantity.parse(), Ok(OrderSize::Quantity(dec("0.5"))));
        let amount = SizeText::pick(None, Some("100")).unwrap();
        assert!(amount.is_amount());
        assert_eq!(amount.parse(), Ok(OrderSize::Amount(dec("100"))));
        // TC1: both or neither
        assert_eq!(
            SizeText::pick(Some("1"), Some("1")),
            Err(DomainError::SizeRequired)
        );
        assert_eq!(SizeText::pick(None, None), Err(DomainError::SizeRequired));
        // TC2: the grammar names the field; zero is well-formed (its sign is checked later)
        assert_eq!(
            SizeText::pick(None, Some("1e3")).unwrap().parse(),
            Err(DomainError::InvalidDecimal {
                field: "amount",
                reason: "no exponent allowed"
            })
        );
        assert_eq!(
            SizeText::pick(Some("0"), None).unwrap().parse(),
            Ok(OrderSize::Quantity(Decimal::ZERO))
        );
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
        // A serialized request (a command forwarded between nodes) is read through the
        // constructor too.
        let text = r#"{"symbol":"BTCUSDT","side":"buy","size":{"quantity":"0"},"client_order_id":null,"origin":"manual"}"#;
        assert!(serde_json::from_str::<TradeRequest>(text).is_err());
        let one = serde_json::from_str::<TradeRequest>(&text.replace("\"0\"", "\"1\"")).unwrap();
        assert_eq!(one.size(), OrderSize::Quantity(Decimal::ONE));
    }

    #[test]
    fn origin_names_round_trip() {
        for origin in [
            TradeOrigin::Manual,
            TradeOrigin::Auto,
            TradeOrigin::StopLoss,
            TradeOrigin::TakeProfit,
            TradeOrigin::ForceExit,
        ] {
            assert_eq!(TradeOrigin::from_name(origin.as_str()), Some(origin));
        }
        assert_eq!(TradeOrigin::from_name("bogus"), None);
    }
}
