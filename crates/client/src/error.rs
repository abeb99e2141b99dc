//! The one error type of the client, and the gateway's stable error codes.

use std::fmt;

/// A stable error code of the gateway (docs/protocol.md, "Errors"), parsed from an `error`
/// frame's `code` or a refused upgrade's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_message`: the frame was not a JSON object with a string `type`.
    InvalidMessage,
    /// `unknown_type`.
    UnknownType,
    /// `invalid_payload`.
    InvalidPayload,
    /// `unknown_channel`.
    UnknownChannel,
    /// `unknown_symbol`.
    UnknownSymbol,
    /// `too_many_subscriptions`.
    TooManySubscriptions,
    /// `invalid_decimal`.
    InvalidDecimal,
    /// `rate_limited`.
    RateLimited,
    /// `forbidden`: the token lacks the scope (`trade` for commands).
    Forbidden,
    /// `invalid_symbol`.
    InvalidSymbol,
    /// `invalid_size`.
    InvalidSize,
    /// `invalid_client_order_id`.
    InvalidClientOrderId,
    /// `invalid_levels`.
    InvalidLevels,
    /// `no_price`.
    NoPrice,
    /// `order_too_small`.
    OrderTooSmall,
    /// `insufficient_funds`.
    InsufficientFunds,
    /// `insufficient_position`.
    InsufficientPosition,
    /// `no_position`.
    NoPosition,
    /// `duplicate_client_order_id`: the key was used for a different order.
    DuplicateClientOrderId,
    /// `invalid_order`: a price or option that does not fit the order's type.
    InvalidOrder,
    /// `post_only_would_cross`: a post-only limit that would fill at once.
    PostOnlyWouldCross,
    /// `too_many_orders`: `trading.max_open_orders` open orders already.
    TooManyOrders,
    /// `unknown_order`: no order has this id or key.
    UnknownOrder,
    /// `order_not_open`: the order is already filled, canceled, rejected or expired.
    OrderNotOpen,
    /// `invalid_limit`: a listing's `limit` outside 1-1000.
    InvalidLimit,
    /// `invalid_query`: a listing's unknown `status`.
    InvalidQuery,
    /// `storage_error` (retry later).
    StorageError,
    /// `engine_fenced`: another engine took the storage over (retry with the same
    /// `client_order_id`, on the engine that serves).
    EngineFenced,
    /// `unavailable` (retry later with the same `client_order_id`).
    Unavailable,
    /// `internal`.
    Internal,
    /// `unauthorized` (HTTP 401 at the upgrade or on REST).
    Unauthorized,
    /// A code this version of the client does not know (a newer server).
    Other(String),
}

impl ErrorCode {
    /// Every code the client knows, with its wire name.
    const NAMES: [(&'static str, Self); 31] = [
        ("invalid_message", Self::InvalidMessage),
        ("unknown_type", Self::UnknownType),
        ("invalid_payload", Self::InvalidPayload),
        ("unknown_channel", Self::UnknownChannel),
        ("unknown_symbol", Self::UnknownSymbol),
        ("too_many_subscriptions", Self::TooManySubscriptions),
        ("invalid_decimal", Self::InvalidDecimal),
        ("rate_limited", Self::RateLimited),
        ("forbidden", Self::Forbidden),
        ("invalid_symbol", Self::InvalidSymbol),
        ("invalid_size", Self::InvalidSize),
        ("invalid_client_order_id", Self::InvalidClientOrderId),
        ("invalid_levels", Self::InvalidLevels),
        ("no_price", Self::NoPrice),
        ("order_too_small", Self::OrderTooSmall),
        ("insufficient_funds", Self::InsufficientFunds),
        ("insufficient_position", Self::InsufficientPosition),
        ("no_position", Self::NoPosition),
        ("duplicate_client_order_id", Self::DuplicateClientOrderId),
        ("invalid_order", Self::InvalidOrder),
        ("post_only_would_cross", Self::PostOnlyWouldCross),
        ("too_many_orders", Self::TooManyOrders),
        ("unknown_order", Self::UnknownOrder),
        ("order_not_open", Self::OrderNotOpen),
        ("invalid_limit", Self::InvalidLimit),
        ("invalid_query", Self::InvalidQuery),
        ("storage_error", Self::StorageError),
        ("engine_fenced", Self::EngineFenced),
        ("unavailable", Self::Unavailable),
        ("internal", Self::Internal),
        ("unauthorized", Self::Unauthorized),
    ];

    /// Parses a wire code; unknown ones are kept as [`ErrorCode::Other`].
    #[must_use]
    pub fn parse(code: &str) -> Self {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == code)
            .map_or_else(|| Self::Other(code.to_owned()), |(_, known)| known.clone())
    }

    /// Returns the wire name, e.g. `"insufficient_funds"`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(code) => code,
            known => Self::NAMES
                .iter()
                .find(|(_, code)| code == known)
                .map_or("internal", |(name, _)| name),
        }
    }

    /// True for the service failures worth retrying later with the same `client_order_id`.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::StorageError | Self::EngineFenced | Self::Unavailable
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong for a caller of the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ws://host:port/path`.
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    /// The server answered with an error (an `error` frame, or a refused upgrade's JSON body).
    #[error("server: {code}: {message}")]
    Server {
        /// The stable code.
        code: ErrorCode,
        /// The server's human-readable text.
        message: String,
        /// The HTTP status of a refused upgrade or REST request; `None` for an `error` frame.
        status: Option<u16>,
    },
    /// The connection failed (TCP, handshake, a dropped socket); the client reconnects by itself.
    #[error("connection: {0}")]
    Connection(String),
    /// No reply within the request timeout. A `manual_trade` may still have executed: retry it with
    /// the same `client_order_id` (the client keeps retrying it until then).
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The client was closed (or stopped on a fatal error).
    #[error("client closed")]
    Closed,
    /// A frame or body the client could not read (a server of another version).
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// A request the server would refuse, caught before sending (e.g. an order with a zero
    /// price); its [`cryptobot_domain::DomainError::code`] is the code the server would answer with.
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] cryptobot_domain::DomainError),
}

impl ClientError {
    /// Returns the server's code, if the server refused.
    #[must_use]
    pub const fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when reconnecting cannot help: a refused token, scope or request (HTTP 400, 401, 403),
    /// or a request the client refused itself.
    #[must_use]
    pub const fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::InvalidUrl(_)
                | Self::InvalidRequest(_)
                | Self::Server {
                    status: Some(400 | 401 | 403),
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        for (name, code) in ErrorCode::NAMES {
            assert_eq!(ErrorCode::parse(name), code);
            assert_eq!(code.as_str(), name);
        }
        assert_eq!(
            ErrorCode::parse("order_vanished"),
            ErrorCode::Other("order_vanished".into())
        );
        assert_eq!(
            ErrorCode::parse("order_vanished").as_str(),
            "order_vanished"
        );
        assert!(ErrorCode::Unavailable.is_retryable());
        assert!(ErrorCode::EngineFenced.is_retryable());
        assert!(!ErrorCode::InsufficientFunds.is_retryable());
    }

    #[test]
    fn refusals_of_the_token_are_fatal_others_are_not() {
        let refused = |status| ClientError::Server {
            code: ErrorCode::Unauthorized,
            message: String::new(),
            status: Some(status),
        };
        assert!(refused(401).is_fatal());
        assert!(refused(403).is_fatal());
        assert!(!refused(503).is_fatal());
        assert!(!ClientError::Connection("reset".into()).is_fatal());
    }
}
