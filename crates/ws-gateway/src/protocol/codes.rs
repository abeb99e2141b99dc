//! Stable machine-readable error codes of the gateway itself (service errors add their own codes,
//! see `ServiceError::code`), and the close code that is fixed rather than configured (the others
//! are `GatewayConfig::close_code_*`).

/// The frame is not a JSON object with a string `type`.
pub const INVALID_MESSAGE: &str = "invalid_message";
/// `type` names no message.
pub const UNKNOWN_TYPE: &str = "unknown_type";
/// The payload does not have the message's shape.
pub const INVALID_PAYLOAD: &str = "invalid_payload";
/// A channel name that is not one of the channels.
pub const UNKNOWN_CHANNEL: &str = "unknown_channel";
/// A symbol that is not traded here.
pub const UNKNOWN_SYMBOL: &str = "unknown_symbol";
/// The subscription would exceed `max_subscriptions`.
pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
/// The service failed in an unexpected way.
pub const INTERNAL: &str = "internal_error";
/// The connection's token lacks the scope the message needs.
pub const FORBIDDEN: &str = "forbidden";
/// Too many inbound messages per second (`max_messages_per_sec`): the message was dropped.
pub const RATE_LIMITED: &str = "rate_limited";

/// Close code for a text message that is not valid UTF-8 (RFC 6455 §7.4.1).
pub const CLOSE_INVALID_UTF8: u16 = 1007;
