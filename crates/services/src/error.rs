use cryptobot_domain::{ClientOrderId, DomainError, OrderRef, OrderStatus, Symbol};
use rust_decimal::Decimal;
use thiserror::Error;

/// Why a service call failed. Every variant has a stable [`ServiceError::code`] that the REST API
/// and the WebSocket gateway put on the wire unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServiceError {
    /// Input failed a domain rule.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The symbol is valid but not traded here (not in `market.symbols`).
    #[error("unknown symbol {0}")]
    UnknownSymbol(Symbol),
    /// The market has not published a price for the symbol yet.
    #[error("no price yet for {0}")]
    NoPrice(Symbol),
    /// The order's value is below `trading.min_notional`.
    #[error("order too small: notional {notional} is below the minimum {minimum}")]
    OrderTooSmall {
        /// Value of the order in the quote asset.
        notional: Decimal,
        /// Configured minimum.
        minimum: Decimal,
    },
    /// Not enough cash for a buy, fees included.
    #[error("insufficient funds: need {needed}, have {available}")]
    InsufficientFunds {
        /// Cash the buy needs, fee included.
        needed: Decimal,
        /// Cash available.
        available: Decimal,
    },
    /// Selling more than is held.
    #[error("insufficient position: cannot sell {requested}, holding {held}")]
    InsufficientPosition {
        /// Quantity asked for.
        requested: Decimal,
        /// Quantity held.
        held: Decimal,
    },
    /// No open position in the symbol.
    #[error("no open position in {0}")]
    NoPosition(Symbol),
    /// The client order id was used before for a different order.
    #[error("client_order_id {0} was already used for a different order")]
    DuplicateClientOrderId(ClientOrderId),
    /// No order with this id or client order id.
    #[error("unknown order {0}")]
    UnknownOrder(OrderRef),
    /// The order is no longer open (filled, canceled, rejected or expired), so it cannot be
    /// canceled.
    #[error("order {id} is {status}, not open", status = status.as_str())]
    OrderNotOpen {
        /// The order's id.
        id: u64,
        /// Its final status.
        status: OrderStatus,
    },
    /// A post-only order would fill at once (take liquidity), so it was refused.
    #[error("post-only order would cross: {side} limit {price} against {against}")]
    PostOnlyWouldCross {
        /// `buy` or `sell`.
        side: &'static str,
        /// The order's limit price.
        price: Decimal,
        /// The ask (buy) or bid (sell) it would fill against.
        against: Decimal,
    },
    /// The account holds `trading.max_open_orders` open orders already.
    #[error("too many open orders: at most {max}")]
    TooManyOrders {
        /// The limit.
        max: usize,
    },
    /// The database failed; the command was not executed.
    #[error("storage: {0}")]
    Storage(String),
    /// Another engine took the storage's fence over: this engine's write was rolled back, and
    /// it commits nothing any more (the other engine serves).
    #[error(
        "engine fenced: another engine holds the storage (epoch {current}, this engine held {held})"
    )]
    Fenced {
        /// The epoch this engine acquired.
        held: u64,
        /// The epoch the database holds now.
        current: u64,
    },
    /// The service is stopped or stopping.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// An error the trading engine returned to a gateway node for a forwarded command: the
    /// engine's code and message, unchanged.
    #[error("{message}")]
    Remote {
        /// The engine's [`ServiceError::code`] (`internal` if this node does not know it).
        code: &'static str,
        /// The engine's message.
        message: String,
        /// The engine's [`ServiceError::is_client_error`].
        client_error: bool,
    },
}

impl ServiceError {
    /// Returns the stable machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Domain(err) => err.code(),
            Self::UnknownSymbol(_) => "unknown_symbol",
            Self::NoPrice(_) => "no_price",
            Self::OrderTooSmall { .. } => "order_too_small",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::InsufficientPosition { .. } => "insufficient_position",
            Self::NoPosition(_) => "no_position",
            Self::DuplicateClientOrderId(_) => "duplicate_client_order_id",
            Self::UnknownOrder(_) => "unknown_order",
            Self::OrderNotOpen { .. } => "order_not_open",
            Self::PostOnlyWouldCross { .. } => "post_only_would_cross",
            Self::TooManyOrders { .. } => "too_many_orders",
            Self::Storage(_) => "storage_error",
            Self::Fenced { .. } => "engine_fenced",
            Self::Unavailable(_) => "unavailable",
            Self::Remote { code, .. } => code,
        }
    }

    /// Every code [`ServiceError::code`] can return, domain codes included.
    pub const CODES: [&'static str; 22] = [
        "invalid_symbol",
        "invalid_limit",
        "invalid_query",
        "invalid_order",
        "unknown_order",
        "order_not_open",
        "post_only_would_cross",
        "too_many_orders",
        "invalid_client_order_id",
        "invalid_size",
        "invalid_levels",
        "unknown_symbol",
        "no_price",
        "order_too_small",
        "insufficient_funds",
        "insufficient_position",
        "no_position",
        "duplicate_client_order_id",
        "storage_error",
        "engine_fenced",
        "unavailable",
        "internal",
    ];

    /// The static form of a code received from another node (`internal` when unknown).
    #[must_use]
    pub fn known_code(code: &str) -> &'static str {
        Self::CODES
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("internal")
    }

    /// Returns true when the request itself was wrong (the client should not retry unchanged),
    /// false for failures of the service (retrying later may succeed).
    #[must_use]
    pub const fn is_client_error(&self) -> bool {
        match self {
            Self::Remote { client_error, .. } => *client_error,
            _ => !matches!(
                self,
                Self::Storage(_) | Self::Fenced { .. } | Self::Unavailable(_) | Self::NoPrice(_)
            ),
        }
    }
}
