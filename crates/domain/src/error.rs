use rust_decimal::Decimal;
use thiserror::Error;

/// Why a value was rejected by the domain's validation rules.
///
/// Messages are short and safe to show to clients; each variant has a stable [`DomainError::code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A symbol that is not 2 to 20 upper-case ASCII letters or digits.
    #[error("invalid symbol {0:?}: expected 2-20 upper-case letters or digits, e.g. BTCUSDT")]
    InvalidSymbol(String),
    /// A client order id that is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid client_order_id: expected 1-64 characters from [A-Za-z0-9_.:-]")]
    InvalidClientOrderId,
    /// A quantity, amount or price that must be strictly positive.
    #[error("{field} must be greater than zero, got {value}")]
    NotPositive {
        /// The field that was checked.
        field: &'static str,
        /// The rejected value.
        value: Decimal,
    },
    /// A decimal outside the grammar of [`crate::money::parse_decimal`].
    #[error(
        "invalid decimal for {field}: {reason}; expected digits with an optional fraction, e.g. \"0.01\""
    )]
    InvalidDecimal {
        /// The field that was read.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An order with both or neither of `quantity` and `amount`.
    #[error("exactly one of quantity or amount is required")]
    SizeRequired,
    /// A stop-loss or take-profit level on the wrong side of the others.
    #[error("invalid price levels: {0}")]
    InvalidLevels(String),
    /// An order whose prices or options do not fit its type.
    #[error("invalid order: {0}")]
    InvalidOrder(String),
    /// A page size outside 1 to `max`.
    #[error("limit must be between 1 and {max}")]
    InvalidLimit {
        /// The largest page size.
        max: usize,
    },
    /// An order status filter that names no status.
    #[error("invalid status: expected open, new, triggered, filled, canceled, rejected or expired")]
    InvalidStatus,
}

impl DomainError {
    /// Returns the stable machine-readable code clients can match on.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InvalidSymbol(_) => "invalid_symbol",
            Self::InvalidClientOrderId => "invalid_client_order_id",
            Self::NotPositive { .. } => "invalid_size",
            Self::InvalidDecimal { .. } => "invalid_decimal",
            // A shape error like a missing field, so the same code as serde's shape errors.
            Self::SizeRequired => "invalid_payload",
            Self::InvalidLevels(_) => "invalid_levels",
            Self::InvalidOrder(_) => "invalid_order",
            Self::InvalidLimit { .. } => "invalid_limit",
            Self::InvalidStatus => "invalid_query",
        }
    }
}
