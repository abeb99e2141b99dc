//! Orders with a lifecycle: market, limit (GTC / IOC / FOK, optionally post-only), stop-market
//! and stop-limit, their validation, status and the updates published about them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{ClientOrderId, DomainError, OrderSize, Side, SizeText, Symbol, money};

/// The kind of an order as clients name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OrderType {
    /// Fills at once at the last price (as `manual_trade`).
    Market,
    /// Rests until the ask (buy) or bid (sell) reaches its price.
    Limit,
    /// Waits for the last price to reach its stop price, then fills as a market order.
    StopMarket,
    /// Waits for the last price to reach its stop price, then rests as a limit order.
    StopLimit,
}

impl OrderType {
    /// The snake_case name used on the wire and in storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Market => "market",
            Self::Limit => "limit",
            Self::StopMarket => "stop_market",
            Self::StopLimit => "stop_limit",
        }
    }

    /// Parses the name produced by [`OrderType::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Market, Self::Limit, Self::StopMarket, Self::StopLimit]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// How long a limit order may rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimeInForce {
    /// Good till canceled: rests until it fills or is canceled.
    #[default]
    Gtc,
    /// Immediate or cancel: fills at once or expires.
    Ioc,
    /// Fill or kill: fills whole at once or expires (the simulator has no partial fills, so this
    /// behaves as IOC).
    Fok,
}

impl TimeInForce {
    /// The upper-case name used on the wire and in storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gtc => "GTC",
            Self::Ioc => "IOC",
            Self::Fok => "FOK",
        }
    }

    /// Parses the name produced by [`TimeInForce::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Gtc, Self::Ioc, Self::Fok]
            .into_iter()
            .find(|tif| tif.as_str() == name)
    }
}

/// Where an order is in its life. `new` and `triggered` are open (they reserve funds); the others
/// are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OrderStatus {
    /// Accepted and resting (a stop order: waiting for its stop price).
    New,
    /// A stop-limit order whose stop price was reached: now resting at its limit price.
    Triggered,
    /// Filled completely (the simulator does not fill partially).
    Filled,
    /// Canceled by a client.
    Canceled,
    /// Could not be filled when it had to be (funds or size no longer sufficient).
    Rejected,
    /// An IOC or FOK order that could not fill at once.
    Expired,
}

impl OrderStatus {
    /// The snake_case name used on the wire and in storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Triggered => "triggered",
            Self::Filled => "filled",
            Self::Canceled => "canceled",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// Parses the name produced by [`OrderStatus::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::New,
            Self::Triggered,
            Self::Filled,
            Self::Canceled,
            Self::Rejected,
            Self::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// True for `new` and `triggered`: the order may still fill and holds a reservation.
    #[must_use]
    pub const fn is_open(self) -> bool {
        matches!(self, Self::New | Self::Triggered)
    }
}

/// The values of an order command, typed but not yet checked together: what
/// [`OrderRequest::new`] checks (a positive size and prices, and the fields the type needs or
/// forbids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFields {
    /// The pair.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Market, limit, stop-market or stop-limit.
    pub order_type: OrderType,
    /// Quantity (every type) or quote amount (market buys only).
    pub size: OrderSize,
    /// Limit price (`limit`, `stop_limit`).
    #[serde(default, with = "crate::money::opt_str")]
    pub price: Option<Decimal>,
    /// Stop price (`stop_market`, `stop_limit`).
    #[serde(default, with = "crate::money::opt_str")]
    pub stop_price: Option<Decimal>,
    /// For `limit` orders; `GTC` for every other type.
    pub time_in_force: TimeInForce,
    /// A `limit` order that must not fill on placing (it would take liquidity).
    pub post_only: bool,
    /// Idempotency key, shared with trades.
    pub client_order_id: Option<ClientOrderId>,
}

/// A validated order command: [`OrderFields`] that passed [`OrderRequest::new`]. Its fields are
/// read through `Deref` and cannot be changed, so every request in the system passed the checks
/// (deserializing included: commands travel between nodes as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OrderRequest(OrderFields);

impl OrderRequest {
    /// Checks `fields` together, in the documented order (docs/protocol.md "Order of checks"):
    /// a positive size, positive prices, then what the type needs or forbids.
    ///
    /// # Errors
    /// [`DomainError::NotPositive`] for a zero or negative size or price, then
    /// [`DomainError::InvalidOrder`] for a price or option that does not fit the type (e.g. a
    /// limit order without `price`).
    pub fn new(fields: OrderFields) -> Result<Self, DomainError> {
        fields.size.validate()?;
        for (name, price) in [("price", fields.price), ("stop_price", fields.stop_price)] {
            if let Some(price) = price {
                money::ensure_positive(name, price)?;
            }
        }
        let invalid = |why: &str| Err(DomainError::InvalidOrder(why.to_owned()));
        let kind = fields.order_type;
        let needs_price = matches!(kind, OrderType::Limit | OrderType::StopLimit);
        let needs_stop = matches!(kind, OrderType::StopMarket | OrderType::StopLimit);
        if needs_price != fields.price.is_some() {
            return invalid(if needs_price {
                "price is required for limit and stop_limit orders"
            } else {
                "price is only for limit and stop_limit orders"
            });
        }
        if needs_stop != fields.stop_price.is_some() {
            return invalid(if needs_stop {
                "stop_price is required for stop_market and stop_limit orders"
            } else {
                "stop_price is only for stop_market and stop_limit orders"
            });
        }
        let amount = matches!(fields.size, OrderSize::Amount(_));
        if amount && !(kind == OrderType::Market && fields.side == Side::Buy) {
            return invalid("amount is only for market buys; give quantity");
        }
        if fields.time_in_force != TimeInForce::Gtc && kind != OrderType::Limit {
            return invalid("time_in_force is only for limit orders");
        }
        if fields.post_only
            && (kind != OrderType::Limit || fields.time_in_force != TimeInForce::Gtc)
        {
            return invalid("post_only is only for GTC limit orders");
        }
        Ok(Self(fields))
    }

    /// The same order with another idempotency key (the key is not checked with the others).
    #[must_use]
    pub fn with_client_order_id(mut self, key: Option<ClientOrderId>) -> Self {
        self.0.client_order_id = key;
        self
    }
}

impl std::ops::Deref for OrderRequest {
    type Target = OrderFields;

    fn deref(&self) -> &OrderFields {
        &self.0
    }
}

impl<'de> Deserialize<'de> for OrderRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(OrderFields::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// An order command as a client writes it (REST body, WebSocket `place_order` payload): every
/// value as text, checked by [`OrderInput::into_request`] in one order for both paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    /// The pair, e.g. `BTCUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// `market`, `limit`, `stop_market` or `stop_limit`.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Base-asset quantity, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// Quote-asset amount (market buys only), a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Limit price, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Stop price, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_price: Option<String>,
    /// `GTC` (default), `IOC` or `FOK`; limit orders only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_in_force: Option<TimeInForce>,
    /// Refuse the order instead of filling it on placing; limit orders only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_only: Option<bool>,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<String>,
}

impl OrderInput {
    /// Validates the command in the order of `manual_trade` (exactly one size, the symbol, the
    /// `client_order_id`, the decimals, positivity), then the fields the type needs or forbids.
    ///
    /// # Errors
    /// The [`crate::TradeInput::into_request`] errors, then [`DomainError::InvalidOrder`] for a
    /// price or option that does not fit the type (e.g. a limit order without `price`).
    pub fn into_request(self) -> Result<OrderRequest, DomainError> {
        let size = SizeText::pick(self.quantity.as_deref(), self.amount.as_deref())?;
        let symbol = Symbol::parse(&self.symbol)?;
        let client_order_id = ClientOrderId::parse_optional(self.client_order_id.as_deref())?;
        let size = size.parse()?;
        let price = self
            .price
            .as_deref()
            .map(|text| money::parse_decimal("price", text))
            .transpose()?;
        let stop_price = self
            .stop_price
            .as_deref()
            .map(|text| money::parse_decimal("stop_price", text))
            .transpose()?;
        OrderRequest::new(OrderFields {
            symbol,
            side: self.side,
            order_type: self.order_type,
            size,
            price,
            stop_price,
            time_in_force: self.time_in_force.unwrap_or_default(),
            post_only: self.post_only.unwrap_or(false),
            client_order_id,
        })
    }
}

impl From<&OrderRequest> for OrderInput {
    fn from(request: &OrderRequest) -> Self {
        let (quantity, amount) = match request.size {
            OrderSize::Quantity(q) => (Some(q.to_string()), None),
            OrderSize::Amount(a) => (None, Some(a.to_string())),
        };
        Self {
            symbol: request.symbol.to_string(),
            side: request.side,
            order_type: request.order_type,
            quantity,
            amount,
            price: request.price.map(|p| p.to_string()),
            stop_price: request.stop_price.map(|p| p.to_string()),
            time_in_force: Some(request.time_in_force),
            post_only: Some(request.post_only),
            client_order_id: request.client_order_id.as_ref().map(ToString::to_string),
        }
    }
}

/// Default `limit` of an order listing.
pub const DEFAULT_ORDERS_LIMIT: usize = 50;
/// Largest `limit` of an order listing.
pub const MAX_ORDERS_LIMIT: usize = 1000;

/// An order listing as a client writes it (`GET /api/v1/orders` query, `list_orders` payload).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct OrderQueryInput {
    /// `open`, or one of `new`, `triggered`, `filled`, `canceled`, `rejected`, `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(schema_with = crate::openapi::status_filter))]
    pub status: Option<String>,
    /// Only this symbol's orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::SymbolText>))]
    pub symbol: Option<String>,
    /// Only the order placed under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(value_type = Option<crate::openapi::ClientOrderIdText>)
    )]
    pub client_order_id: Option<String>,
    /// Cursor: only orders with a smaller id (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(maximum = 18_446_744_073_709_551_615_u64))]
    pub before_id: Option<u64>,
    /// Cursor: only orders with a larger id (oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(maximum = 18_446_744_073_709_551_615_u64))]
    pub after_id: Option<u64>,
    /// Page size, 1 to 1000 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000, default = 50))]
    pub limit: Option<usize>,
}

impl OrderQueryInput {
    /// Validates the listing: the limit, the status, the symbol, the client order id.
    ///
    /// # Errors
    /// [`DomainError::InvalidLimit`], [`DomainError::InvalidStatus`],
    /// [`DomainError::InvalidSymbol`] or [`DomainError::InvalidClientOrderId`].
    pub fn parse(self) -> Result<OrderQuery, DomainError> {
        let limit = self.limit.unwrap_or(DEFAULT_ORDERS_LIMIT);
        if !(1..=MAX_ORDERS_LIMIT).contains(&limit) {
            return Err(DomainError::InvalidLimit {
                max: MAX_ORDERS_LIMIT,
            });
        }
        let status = self
            .status
            .as_deref()
            .map(|name| StatusFilter::from_name(name).ok_or(DomainError::InvalidStatus))
            .transpose()?;
        Ok(OrderQuery {
            status,
            symbol: self.symbol.as_deref().map(Symbol::parse).transpose()?,
            client_order_id: ClientOrderId::parse_optional(self.client_order_id.as_deref())?,
            before_id: self.before_id,
            after_id: self.after_id,
            limit,
        })
    }
}

/// An order and where it is in its life, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    /// Storage id, increasing in placing order.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub id: u64,
    /// The idempotency key it was placed under, if any.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_client_order_id, required = true))]
    pub client_order_id: Option<ClientOrderId>,
    /// The pair.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::SymbolText))]
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Market, limit, stop-market or stop-limit.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Base quantity asked for (absent for a market buy by amount).
    #[serde(default, with = "crate::money::opt_str")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub quantity: Option<Decimal>,
    /// Quote amount asked for (market buys by amount only).
    #[serde(default, with = "crate::money::opt_str")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub amount: Option<Decimal>,
    /// Limit price.
    #[serde(default, with = "crate::money::opt_str")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub price: Option<Decimal>,
    /// Stop price.
    #[serde(default, with = "crate::money::opt_str")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::nullable_decimal, required = true))]
    pub stop_price: Option<Decimal>,
    /// `GTC`, `IOC` or `FOK`.
    pub time_in_force: TimeInForce,
    /// Refused rather than filled on placing.
    pub post_only: bool,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// Quote cash held back for an open buy (cost at its price plus fee); zero otherwise.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub reserved_cash: Decimal,
    /// Base quantity held back for an open sell; zero otherwise.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::DecimalText))]
    pub reserved_quantity: Decimal,
    /// The trade that filled it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, required = true))]
    pub trade_id: Option<u64>,
    /// Why it was rejected or expired.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub reason: Option<String>,
    /// When it was placed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// The size it was placed with.
    #[must_use]
    pub fn size(&self) -> OrderSize {
        match (self.quantity, self.amount) {
            (Some(quantity), _) => OrderSize::Quantity(quantity),
            (None, Some(amount)) => OrderSize::Amount(amount),
            (None, None) => OrderSize::Quantity(Decimal::ZERO),
        }
    }

    /// True when `request` asks for exactly this order (an idempotent repeat).
    #[must_use]
    pub fn same_request(&self, request: &OrderRequest) -> bool {
        self.symbol == request.symbol
            && self.side == request.side
            && self.order_type == request.order_type
            && self.size() == request.size
            && self.price == request.price
            && self.stop_price == request.stop_price
            && self.time_in_force == request.time_in_force
            && self.post_only == request.post_only
    }
}

/// What an `order_update` announces; the same names as [`OrderStatus`].
pub type OrderEventKind = OrderStatus;

/// An order changed: the payload of `order_update` on the `orders` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderUpdate {
    /// What happened: `new`, `triggered`, `filled`, `canceled`, `rejected` or `expired`.
    pub event: OrderEventKind,
    /// The order after the change.
    pub order: Order,
}

/// Which orders `GET /api/v1/orders` and `list_orders` ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderQuery {
    /// `open` (new or triggered) or one status; none for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusFilter>,
    /// Only orders of this symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<Symbol>,
    /// Only the order placed under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_order_id: Option<ClientOrderId>,
    /// Cursor: only orders with a smaller id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<u64>,
    /// Cursor: only orders with a larger id; the page is then oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<u64>,
    /// Largest number of orders in the page.
    pub limit: usize,
}

impl OrderQuery {
    /// The `limit` newest orders, no filter.
    #[must_use]
    pub const fn latest(limit: usize) -> Self {
        Self {
            status: None,
            symbol: None,
            client_order_id: None,
            before_id: None,
            after_id: None,
            limit,
        }
    }

    /// True when the page runs oldest first.
    #[must_use]
    pub const fn ascending(&self) -> bool {
        self.after_id.is_some()
    }

    /// Whether `order` passes every filter and the cursor.
    #[must_use]
    pub fn matches(&self, order: &Order) -> bool {
        self.status
            .is_none_or(|filter| filter.accepts(order.status))
            && self.symbol.as_ref().is_none_or(|s| *s == order.symbol)
            && self
                .client_order_id
                .as_ref()
                .is_none_or(|id| order.client_order_id.as_ref() == Some(id))
            && self.before_id.is_none_or(|id| order.id < id)
            && self.after_id.is_none_or(|id| order.id > id)
    }
}

/// The `status` filter of an order query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// `new` or `triggered`.
    Open,
    /// Exactly this status.
    #[serde(untagged)]
    Is(OrderStatus),
}

impl StatusFilter {
    /// Parses `open` or a status name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "open" {
            return Some(Self::Open);
        }
        OrderStatus::from_name(name).map(Self::Is)
    }

    /// Whether an order in `status` passes.
    #[must_use]
    pub fn accepts(self, status: OrderStatus) -> bool {
        match self {
            Self::Open => status.is_open(),
            Self::Is(wanted) => wanted == status,
        }
    }
}

/// One page of orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// The orders, newest first (oldest first with `after_id`).
    pub orders: Vec<Order>,
    /// True when more orders match beyond this page.
    pub more: bool,
}

/// Which order a cancel means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderRef {
    /// By the server's id.
    Id(u64),
    /// By the client's idempotency key.
    ClientOrderId(ClientOrderId),
}

impl std::fmt::Display for OrderRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::ClientOrderId(id) => write!(f, "client_order_id {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: OrderType) -> OrderInput {
        OrderInput {
            symbol: "BTCUSDT".to_owned(),
            side: Side::Buy,
            order_type: kind,
            quantity: Some("0.5".to_owned()),
            amount: None,
            price: None,
            stop_price: None,
            time_in_force: None,
            post_only: None,
            client_order_id: None,
        }
    }

    #[test]
    fn order_input_checks_each_type_fields() {
        let limit = OrderInput {
            price: Some("100".to_owned()),
            ..input(OrderType::Limit)
        };
        let ok = limit.clone().into_request().unwrap();
        assert_eq!(ok.price, Some(Decimal::from(100)));
        assert_eq!(ok.time_in_force, TimeInForce::Gtc);
        let code = |input: OrderInput| input.into_request().map(|_| ()).map_err(|e| e.code());
        let cases = [
            // TC0: limit without price
            (input(OrderType::Limit), "invalid_order"),
            // TC1: market with a price
            (
                OrderInput {
                    price: Some("1".into()),
                    ..input(OrderType::Market)
                },
                "invalid_order",
            ),
            // TC2: stop_market without stop_price
            (input(OrderType::StopMarket), "invalid_order"),
            // TC3: stop_limit with only a stop
            (
                OrderInput {
                    stop_price: Some("1".into()),
                    ..input(OrderType::StopLimit)
                },
                "invalid_order",
            ),
            // TC4: amount on a limit order
            (
                OrderInput {
                    quantity: None,
                    amount: Some("10".into()),
                    ..limit.clone()
                },
                "invalid_order",
            ),
            // TC5: IOC on a stop order
            (
                OrderInput {
                    stop_price: Some("1".into()),
                    time_in_force: Some(TimeInForce::Ioc),
                    ..input(OrderType::StopMarket)
                },
                "invalid_order",
            ),
            // TC6: post_only with IOC
            (
                OrderInput {
                    time_in_force: Some(TimeInForce::Ioc),
                    post_only: Some(true),
                    ..limit.clone()
                },
                "invalid_order",
            ),
            // TC7: a price of zero, a bad decimal, a bad symbol, no size
            (
                OrderInput {
                    price: Some("0".into()),
                    ..limit.clone()
                },
                "invalid_size",
            ),
            (
                OrderInput {
                    price: Some("1e3".into()),
                    ..limit.clone()
                },
                "invalid_decimal",
            ),
            (
                OrderInput {
                    symbol: "btc".into(),
                    ..limit.clone()
                },
                "invalid_symbol",
            ),
            (
                OrderInput {
                    quantity: None,
                    ..limit
                },
                "invalid_payload",
            ),
        ];
        for (case, expected) in cases {
            assert_eq!(code(case.clone()), Err(expected), "{case:?}");
        }
        // TC8: a market buy by amount is fine
        let market = OrderInput {
            quantity: None,
            amount: Some("100".into()),
            ..input(OrderType::Market)
        };
        assert_eq!(
            market.into_request().unwrap().size,
            OrderSize::Amount(Decimal::from(100))
        );
    }

    #[test]
    fn requests_and_orders_round_trip_with_absent_prices() {
        let request = input(OrderType::Market).into_request().unwrap();
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains(r#""price":null"#), "{json}");
        assert_eq!(
            serde_json::from_str::<OrderRequest>(&json).unwrap(),
            request
        );
        let limit = OrderInput {
            price: Some("100.50".into()),
            ..input(OrderType::Limit)
        }
        .into_request()
        .unwrap();
        let json = serde_json::to_string(&limit).unwrap();
        assert!(json.contains(r#""price":"100.50""#), "{json}");
        assert_eq!(serde_json::from_str::<OrderRequest>(&json).unwrap(), limit);
        // A serialized request is read through OrderRequest::new: a limit without its price, or a
        // zero size, is refused there too.
        for bad in [
            json.replace(r#""price":"100.50""#, r#""price":null"#),
            json.replace(r#""quantity":"0.5""#, r#""quantity":"0""#),
        ] {
            assert_ne!(bad, json);
            assert!(serde_json::from_str::<OrderRequest>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_request_new_checks_the_fields_together() {
        let limit: OrderFields = (*OrderInput {
            price: Some("10".into()),
            ..input(OrderType::Limit)
        }
        .into_request()
        .unwrap())
        .clone();
        // TC0: the fields as they are pass
        assert_eq!(
            OrderRequest::new(limit.clone()).map(|r| r.price),
            Ok(Some(Decimal::TEN))
        );
        // TC1: each rule, by its error
        let cases = [
            (
                OrderFields {
                    price: None,
                    ..limit.clone()
                },
                "invalid_order",
            ),
            (
                OrderFields {
                    price: Some(Decimal::ZERO),
                    ..limit.clone()
                },
                "invalid_size",
            ),
            (
                OrderFields {
                    size: OrderSize::Quantity(Decimal::ZERO),
                    ..limit.clone()
                },
                "invalid_size",
            ),
            (
                OrderFields {
                    time_in_force: TimeInForce::Ioc,
                    post_only: true,
                    ..limit.clone()
                },
                "invalid_order",
            ),
            (
                OrderFields {
                    size: OrderSize::Amount(Decimal::TEN),
                    ..limit
                },
                "invalid_order",
            ),
        ];
        for (n, (fields, code)) in cases.into_iter().enumerate() {
            assert_eq!(
                OrderRequest::new(fields).map_err(|e| e.code()),
                Err(code),
                "TC1.{n}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_filters_accept() {
        for status in [
            OrderStatus::New,
            OrderStatus::Triggered,
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Rejected,
            OrderStatus::Expired,
        ] {
            assert_eq!(OrderStatus::from_name(status.as_str()), Some(status));
            assert_eq!(
                StatusFilter::Open.accepts(status),
                matches!(status, OrderStatus::New | OrderStatus::Triggered)
            );
        }
        for kind in [
            OrderType::Market,
            OrderType::Limit,
            OrderType::StopMarket,
            OrderType::StopLimit,
        ] {
            assert_eq!(OrderType::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(StatusFilter::from_name("open"), Some(StatusFilter::Open));
        assert_eq!(StatusFilter::from_name("bogus"), None);
        assert_eq!(serde_json::to_string(&TimeInForce::Ioc).unwrap(), "\"IOC\"");
    }
}
