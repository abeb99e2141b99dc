//! The wire protocol: inbound [`ClientMessage`]s, outbound [`ServerMessage`]s and error codes.
//!
//! Pure and synchronous, so every shape is unit-tested without a socket. The seed's messages keep
//! their exact field names; everything added is additional fields or new message types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cryptobot_domain::{
    Alert, Channel, ClientOrderId, OrderSize, PortfolioSummary, Position, PositionUpdate, Side,
    Signal, Symbol, Ticker, Trade,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stable machine-readable error codes of the gateway itself (service errors add their own codes,
/// see `ServiceError::code`).
pub mod codes {
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
}

/// Longest part of a parser message quoted back to the client.
const MAX_DETAIL: usize = 160;

/// One inbound message: the request and the optional correlation `id` every direct reply echoes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    /// Any JSON value chosen by the client; echoed unchanged in the replies.
    pub id: Option<Value>,
    /// What the client asks for.
    pub request: ClientRequest,
}

/// Every request a client can send (`type` and `payload` of the envelope).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// `subscribe_ticker {symbol}` (seed).
    SubscribeTicker(Symbol),
    /// `unsubscribe_ticker {symbol}`.
    UnsubscribeTicker(Symbol),
    /// `subscribe {channels}`.
    Subscribe(Vec<Channel>),
    /// `unsubscribe {channels}`.
    Unsubscribe(Vec<Channel>),
    /// `manual_trade {symbol, side, quantity | amount, client_order_id}` (seed).
    ManualTrade(ManualTrade),
    /// `update_position {symbol, stop_loss, take_profit}` (seed).
    UpdatePosition {
        /// The position's symbol.
        symbol: Symbol,
        /// The level changes.
        update: PositionUpdate,
    },
    /// `ping`.
    Ping,
    /// `subscribe {channels, resume}` or `resume {epoch, last_seq}`: subscribe and replay what was
    /// missed since the given `seq` of each channel.
    Resume(ResumeRequest),
}

/// A subscription that continues where a previous connection stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// Channels to subscribe, the resumed ones included.
    pub channels: Vec<Channel>,
    /// The epoch the client's `seq` values belong to.
    pub epoch: u64,
    /// The last `seq` the client saw, per channel.
    pub last_seq: BTreeMap<Channel, u64>,
    /// True for a `resume` message (reply `resumed`), false for `subscribe` (reply `subscribed`).
    pub standalone: bool,
}

/// Payload of `manual_trade`; decimals are strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualTrade {
    /// The pair.
    pub symbol: Symbol,
    /// `buy` or `sell`.
    pub side: Side,
    /// Base quantity or quote amount.
    pub size: OrderSize,
    /// Idempotency key.
    pub client_order_id: Option<ClientOrderId>,
}

/// A request that could not be understood: becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The `id` of the request, when it could be read.
    pub id: Option<Value>,
    /// Stable machine code.
    pub code: &'static str,
    /// Human-readable text (the seed's exact texts where the seed defines one).
    pub message: String,
}

impl RequestError {
    /// Builds the `error` frame for this error.
    #[must_use]
    pub fn into_message(self) -> ServerMessage {
        ServerMessage::error(self.id, self.code, self.message)
    }
}

/// The envelope as it appears on the wire.
#[derive(Serialize, Deserialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct SymbolPayload {
    symbol: Symbol,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsPayload {
    channels: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribePayload {
    channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume: Option<ResumePayload>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumePayload {
    epoch: u64,
    last_seq: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualTradePayload {
    symbol: Symbol,
    side: Side,
    #[serde(
        default,
        with = "rust_decimal::serde::str_option",
        skip_serializing_if = "Option::is_none"
    )]
    quantity: Option<Decimal>,
    #[serde(
        default,
        with = "rust_decimal::serde::str_option",
        skip_serializing_if = "Option::is_none"
    )]
    amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_order_id: Option<ClientOrderId>,
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// # Errors
    /// A [`RequestError`] with the seed's texts: "Invalid message format" (`invalid_message`),
    /// "Unknown message type" (`unknown_type`), "Invalid payload for ticker subscription"
    /// (`invalid_payload`), or another `invalid_payload` / `unknown_channel` text.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let raw: RawEnvelope = serde_json::from_str(text).map_err(|_| RequestError {
            id: None,
            code: codes::INVALID_MESSAGE,
            message: "Invalid message format".to_owned(),
        })?;
        let id = raw.id;
        let invalid = |what: &str, err: &dyn std::fmt::Display| RequestError {
            id: id.clone(),
            code: codes::INVALID_PAYLOAD,
            message: format!("Invalid payload for {what}: {}", clip(&err.to_string())),
        };
        let request = match raw.kind.as_str() {
            "subscribe_ticker" | "unsubscribe_ticker" => {
                let symbol = serde_json::from_value::<SymbolPayload>(raw.payload)
                    .map_err(|_| RequestError {
                        id: id.clone(),
                        code: codes::INVALID_PAYLOAD,
                        message: "Invalid payload for ticker subscription".to_owned(),
                    })?
                    .symbol;
                if raw.kind == "subscribe_ticker" {
                    ClientRequest::SubscribeTicker(symbol)
                } else {
                    ClientRequest::UnsubscribeTicker(symbol)
                }
            }
            "subscribe" => {
                let payload = serde_json::from_value::<SubscribePayload>(raw.payload)
                    .map_err(|err| invalid(&raw.kind, &err))?;
                let unknown = |message| RequestError {
                    id: id.clone(),
                    code: codes::UNKNOWN_CHANNEL,
                    message,
                };
                let channels = parse_channels(&payload.channels).map_err(unknown)?;
                match payload.resume {
                    None => ClientRequest::Subscribe(channels),
                    Some(resume) => ClientRequest::Resume(
                        resume_request(channels, resume, false).map_err(unknown)?,
                    ),
                }
            }
            "resume" => {
                let payload = serde_json::from_value::<ResumePayload>(raw.payload)
                    .map_err(|err| invalid(&raw.kind, &err))?;
                ClientRequest::Resume(resume_request(Vec::new(), payload, true).map_err(
                    |message| RequestError {
                        id: id.clone(),
                        code: codes::UNKNOWN_CHANNEL,
                        message,
                    },
                )?)
            }
            "unsubscribe" => {
                let names = serde_json::from_value::<ChannelsPayload>(raw.payload)
                    .map_err(|err| invalid(&raw.kind, &err))?
                    .channels;
                let channels = parse_channels(&names).map_err(|message| RequestError {
                    id: id.clone(),
                    code: codes::UNKNOWN_CHANNEL,
                    message,
                })?;
                ClientRequest::Unsubscribe(channels)
            }
            "manual_trade" => {
                let p = serde_json::from_value::<ManualTradePayload>(raw.payload)
                    .map_err(|err| invalid("manual_trade", &err))?;
                let size = match (p.quantity, p.amount) {
                    (Some(quantity), None) => OrderSize::Quantity(quantity),
                    (None, Some(amount)) => OrderSize::Amount(amount),
                    _ => {
                        return Err(invalid(
                            "manual_trade",
                            &"exactly one of quantity or amount is required",
                        ));
                    }
                };
                ClientRequest::ManualTrade(ManualTrade {
                    symbol: p.symbol,
                    side: p.side,
                    size,
                    client_order_id: p.client_order_id,
                })
            }
            "update_position" => {
                let mut fields = match raw.payload {
                    Value::Object(fields) => fields,
                    _ => return Err(invalid("update_position", &"expected an object")),
                };
                let symbol = fields
                    .remove("symbol")
                    .ok_or("missing field `symbol`")
                    .and_then(|v| serde_json::from_value::<Symbol>(v).map_err(|_| "invalid symbol"))
                    .map_err(|err| invalid("update_position", &err))?;
                let update = serde_json::from_value::<PositionUpdate>(Value::Object(fields))
                    .map_err(|err| invalid("update_position", &err))?;
                ClientRequest::UpdatePosition { symbol, update }
            }
            "ping" => ClientRequest::Ping,
            _ => {
                return Err(RequestError {
                    id,
                    code: codes::UNKNOWN_TYPE,
                    message: "Unknown message type".to_owned(),
                });
            }
        };
        Ok(Self { id, request })
    }

    /// Encodes the message as a client would send it (used by tests, examples and Rust clients).
    #[must_use]
    pub fn to_json(&self) -> String {
        let (kind, payload) = match &self.request {
            ClientRequest::SubscribeTicker(symbol) => {
                ("subscribe_ticker", serde_json::json!({ "symbol": symbol }))
            }
            ClientRequest::UnsubscribeTicker(symbol) => (
                "unsubscribe_ticker",
                serde_json::json!({ "symbol": symbol }),
            ),
            ClientRequest::Subscribe(channels) => {
                ("subscribe", serde_json::json!({ "channels": channels }))
            }
            ClientRequest::Unsubscribe(channels) => {
                ("unsubscribe", serde_json::json!({ "channels": channels }))
            }
            ClientRequest::ManualTrade(trade) => {
                let (quantity, amount) = match trade.size {
                    OrderSize::Quantity(q) => (Some(q), None),
                    OrderSize::Amount(a) => (None, Some(a)),
                };
                let payload = ManualTradePayload {
                    symbol: trade.symbol.clone(),
                    side: trade.side,
                    quantity,
                    amount,
                    client_order_id: trade.client_order_id.clone(),
                };
                (
                    "manual_trade",
                    serde_json::to_value(payload).unwrap_or(Value::Null),
                )
            }
            ClientRequest::UpdatePosition { symbol, update } => {
                let mut fields = serde_json::Map::new();
                fields.insert("symbol".to_owned(), Value::String(symbol.to_string()));
                for (key, change) in [
                    ("stop_loss", update.stop_loss),
                    ("take_profit", update.take_profit),
                ] {
                    match change {
                        cryptobot_domain::LevelChange::Keep => {}
                        cryptobot_domain::LevelChange::Clear => {
                            fields.insert(key.to_owned(), Value::Null);
                        }
                        cryptobot_domain::LevelChange::Set(level) => {
                            fields.insert(key.to_owned(), Value::String(level.to_string()));
                        }
                    }
                }
                ("update_position", Value::Object(fields))
            }
            ClientRequest::Ping => ("ping", Value::Null),
            ClientRequest::Resume(resume) => {
                let last_seq: serde_json::Map<String, Value> = resume
                    .last_seq
                    .iter()
                    .map(|(channel, seq)| (channel.to_string(), Value::from(*seq)))
                    .collect();
                let resume_value = serde_json::json!({"epoch": resume.epoch, "last_seq": last_seq});
                if resume.standalone {
                    ("resume", resume_value)
                } else {
                    (
                        "subscribe",
                        serde_json::json!({"channels": resume.channels, "resume": resume_value}),
                    )
                }
            }
        };
        let raw = RawEnvelope {
            kind: kind.to_owned(),
            payload,
            id: self.id.clone(),
        };
        serde_json::to_string(&raw).unwrap_or_default()
    }
}

/// Builds a [`ResumeRequest`]: the resumed channels are subscribed too (after `channels`).
fn resume_request(
    mut channels: Vec<Channel>,
    payload: ResumePayload,
    standalone: bool,
) -> Result<ResumeRequest, String> {
    let names: Vec<String> = payload.last_seq.keys().cloned().collect();
    let resumed = parse_channels(&names)?;
    let last_seq: BTreeMap<Channel, u64> = resumed
        .into_iter()
        .zip(payload.last_seq.into_values())
        .collect();
    for channel in last_seq.keys() {
        if !channels.contains(channel) {
            channels.push(channel.clone());
        }
    }
    Ok(ResumeRequest {
        channels,
        epoch: payload.epoch,
        last_seq,
        standalone,
    })
}

/// Parses channel names, all or nothing.
fn parse_channels(names: &[String]) -> Result<Vec<Channel>, String> {
    names
        .iter()
        .map(|name| {
            Channel::parse(name).map_err(|err| match err {
                cryptobot_domain::event::ChannelParseError::Unknown => format!(
                    "unknown channel {:?}: expected ticker:<SYMBOL>, trades, portfolio, signals or alerts",
                    clip(name)
                ),
                cryptobot_domain::event::ChannelParseError::Symbol(err) => err.to_string(),
            })
        })
        .collect()
}

/// Cuts a message to [`MAX_DETAIL`] characters so hostile input is not echoed at length.
fn clip(text: &str) -> String {
    text.chars().take(MAX_DETAIL).collect()
}

/// Timing and ordering fields of every pushed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// The channel the event belongs to, e.g. `ticker:BTCUSDT`.
    pub channel: Channel,
    /// Event time in whole seconds since the Unix epoch (as the seed).
    pub timestamp: i64,
    /// Event time in microseconds since the Unix epoch.
    pub ts_us: i64,
    /// Position on the channel, increasing by one per event; a repeat of the previous value marks a
    /// snapshot of the same state (0 when no event was published yet).
    pub seq: u64,
    /// True for a snapshot (sent on subscribe, or the periodic portfolio), absent for live events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
}

impl EventMeta {
    /// Builds the fields for an event published at `ts_us`.
    #[must_use]
    pub const fn new(channel: Channel, seq: u64, ts_us: i64, snapshot: bool) -> Self {
        Self {
            channel,
            timestamp: ts_us.div_euclid(1_000_000),
            ts_us,
            seq,
            snapshot,
        }
    }
}

/// The seed's `trade_notification` payload: the seed's fields plus the whole trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeNotification {
    /// The executed trade (`symbol`, `price`, `quantity`, `side`, `fee`, ...).
    #[serde(flatten)]
    pub trade: Trade,
    /// Seed name of `executed_at`.
    pub purchased_at: DateTime<Utc>,
    /// Seed name of `side`: `"buy"` or `"sell"`.
    #[serde(rename = "type")]
    pub kind: Side,
}

impl From<Trade> for TradeNotification {
    fn from(trade: Trade) -> Self {
        Self {
            purchased_at: trade.executed_at,
            kind: trade.side,
            trade,
        }
    }
}

/// Payload of `trade_executed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeExecuted {
    /// The committed trade.
    pub trade: Trade,
    /// True when the `client_order_id` was seen before and this is the original trade.
    pub replayed: bool,
    /// Advice, e.g. that a command without `client_order_id` is not idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Every frame the server sends, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Reply to `subscribe_ticker` (seed shape: `message` is "Subscribed to `<SYMBOL>`").
    SubscriptionSuccess {
        /// "Subscribed to BTCUSDT".
        message: String,
        /// The active channel set after the change.
        channels: Vec<Channel>,
        /// The server's epoch: the `seq` values this connection sees belong to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `unsubscribe_ticker`.
    UnsubscriptionSuccess {
        /// "Unsubscribed from BTCUSDT".
        message: String,
        /// The active channel set after the change.
        channels: Vec<Channel>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `subscribe`.
    Subscribed {
        /// The active channel set after the change.
        channels: Vec<Channel>,
        /// The server's epoch: the `seq` values this connection sees belong to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        /// With `resume`: per resumed channel, true when exactly the missed events follow, false
        /// when a snapshot (or nothing, see docs/protocol.md) follows instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<BTreeMap<String, bool>>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `unsubscribe`.
    Unsubscribed {
        /// The active channel set after the change.
        channels: Vec<Channel>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// A ticker (live, or a snapshot right after subscribing).
    TickerUpdate {
        /// The ticker.
        payload: Ticker,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// An executed trade (seed).
    TradeNotification {
        /// The trade.
        payload: Box<TradeNotification>,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// The portfolio (seed): on every change and every `portfolio_interval_secs`.
    PortfolioUpdate {
        /// The summary.
        payload: Box<PortfolioSummary>,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// A strategy signal.
    Signal {
        /// The signal.
        payload: Signal,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// An alert (seed: `payload.alert_type`, `payload.message`).
    Alert {
        /// The alert.
        payload: Alert,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// Reply to `manual_trade`.
    TradeExecuted {
        /// The trade and whether it was replayed.
        payload: Box<TradeExecuted>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `update_position`.
    PositionUpdated {
        /// The position with its new levels.
        payload: Position,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `resume`.
    Resumed {
        /// The active channel set after the change.
        channels: Vec<Channel>,
        /// The server's epoch.
        epoch: u64,
        /// Per resumed channel: true when exactly the missed events follow, false when a snapshot
        /// (or nothing, see docs/protocol.md) follows instead.
        recovered: BTreeMap<String, bool>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// First frame of a connection opened with `?welcome=1`.
    Welcome {
        /// The server's epoch (one per server run).
        epoch: u64,
        /// The server's version.
        version: String,
        /// The channels the connection is subscribed to.
        channels: Vec<Channel>,
        /// Scopes of the connection's token (`read`, `trade`); a client without `trade` should
        /// not offer trading.
        scopes: Vec<String>,
    },
    /// Sent right before the 1001 close of a planned shutdown.
    ServerShutdown {
        /// Human-readable reason.
        reason: String,
        /// The epoch ending with this run.
        epoch: u64,
    },
    /// Reply to `ping`.
    Pong {
        /// Server time in seconds.
        timestamp: i64,
        /// Server time in microseconds.
        ts_us: i64,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// A request failed (seed: `error` is the text).
    Error {
        /// Human-readable text.
        error: String,
        /// Stable machine code.
        code: String,
        /// Echo of the request id, when it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

impl ServerMessage {
    /// Builds an `error` frame.
    #[must_use]
    pub fn error(id: Option<Value>, code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            error: message.into(),
            code: code.to_owned(),
            id,
        }
    }

    /// Serializes the frame.
    ///
    /// Cannot fail for these types (string keys only); an empty string is returned if it ever did.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::{LevelChange, fixtures};
    use serde_json::json;

    use super::*;

    fn parse_err(text: &str) -> (String, &'static str) {
        let err = ClientMessage::parse(text).unwrap_err();
        (err.message, err.code)
    }

    #[test]
    fn seed_subscribe_ticker_parses() {
        let msg =
            ClientMessage::parse(r#"{"type":"subscribe_ticker","payload":{"symbol":"BTCUSDT"}}"#)
                .unwrap();
        assert_eq!(
            msg.request,
            ClientRequest::SubscribeTicker(fixtures::symbol("BTCUSDT"))
        );
        assert_eq!(msg.id, None);
    }

    #[test]
    fn seed_error_texts_and_codes() {
        // TC0: not JSON
        assert_eq!(
            parse_err("hello"),
            ("Invalid message format".to_owned(), "invalid_message")
        );
        // TC1: JSON without a string type
        assert_eq!(parse_err(r#"{"payload":{}}"#).1, "invalid_message");
        assert_eq!(parse_err("[1,2]").1, "invalid_message");
        // TC2: unknown type
        assert_eq!(
            parse_err(r#"{"type":"launch_rocket"}"#),
            ("Unknown message type".to_owned(), "unknown_type")
        );
        // TC3: bad ticker payloads
        for bad in [
            r#"{"type":"subscribe_ticker"}"#,
            r#"{"type":"subscribe_ticker","payload":{"symbol":42}}"#,
            r#"{"type":"subscribe_ticker","payload":{"symbol":"btc"}}"#,
        ] {
            assert_eq!(
                parse_err(bad),
                (
                    "Invalid payload for ticker subscription".to_owned(),
                    "invalid_payload"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn errors_echo_the_id_when_readable() {
        let err = ClientMessage::parse(r#"{"type":"nope","id":"r1"}"#).unwrap_err();
        assert_eq!(err.id, Some(json!("r1")));
        let frame = err.into_message().to_json();
        assert_eq!(
            serde_json::from_str::<Value>(&frame).unwrap(),
            json!({"type":"error","error":"Unknown message type","code":"unknown_type","id":"r1"})
        );
    }

    #[test]
    fn manual_trade_takes_decimal_strings_only() {
        let ok = ClientMessage::parse(
            r#"{"type":"manual_trade","id":7,"payload":{"symbol":"BTCUSDT","side":"buy","amount":"100.5","client_order_id":"a-1"}}"#,
        )
        .unwrap();
        let ClientRequest::ManualTrade(trade) = ok.request else {
            panic!("not a trade")
        };
        assert_eq!(trade.size, OrderSize::Amount(fixtures::dec("100.5")));
        assert_eq!(ok.id, Some(json!(7)));
        for bad in [
            // TC0: float
            r#"{"symbol":"BTCUSDT","side":"buy","quantity":0.1}"#,
            // TC1: both sizes
            r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1","amount":"1"}"#,
            // TC2: no size
            r#"{"symbol":"BTCUSDT","side":"buy"}"#,
            // TC3: bad side
            r#"{"symbol":"BTCUSDT","side":"hold","quantity":"1"}"#,
            // TC4: unknown field
            r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1","qty":"1"}"#,
            // TC5: not a decimal
            r#"{"symbol":"BTCUSDT","side":"buy","quantity":"lots"}"#,
        ] {
            let text = format!(r#"{{"type":"manual_trade","payload":{bad}}}"#);
            assert_eq!(parse_err(&text).1, "invalid_payload", "{bad}");
        }
    }

    #[test]
    fn update_position_distinguishes_keep_clear_and_set() {
        let msg = ClientMessage::parse(
            r#"{"type":"update_position","payload":{"symbol":"ETHUSDT","stop_loss":null,"take_profit":"2500"}}"#,
        )
        .unwrap();
        assert_eq!(
            msg.request,
            ClientRequest::UpdatePosition {
                symbol: fixtures::symbol("ETHUSDT"),
                update: PositionUpdate {
                    stop_loss: LevelChange::Clear,
                    take_profit: LevelChange::Set(fixtures::dec("2500")),
                },
            }
        );
        assert_eq!(
            parse_err(r#"{"type":"update_position","payload":{"stop_loss":"1"}}"#).1,
            "invalid_payload"
        );
        assert_eq!(
            parse_err(
                r#"{"type":"update_position","payload":{"symbol":"ETHUSDT","take_profit":2500}}"#
            )
            .1,
            "invalid_payload"
        );
    }

    #[test]
    fn channels_parse_all_or_nothing() {
        let msg = ClientMessage::parse(
            r#"{"type":"subscribe","payload":{"channels":["ticker:BTCUSDT","signals"]}}"#,
        )
        .unwrap();
        assert_eq!(
            msg.request,
            ClientRequest::Subscribe(vec![
                Channel::Ticker(fixtures::symbol("BTCUSDT")),
                Channel::Signals
            ])
        );
        assert_eq!(
            parse_err(r#"{"type":"subscribe","payload":{"channels":["signals","orders"]}}"#).1,
            "unknown_channel"
        );
        assert_eq!(
            parse_err(r#"{"type":"unsubscribe","payload":{"channels":"trades"}}"#).1,
            "invalid_payload"
        );
    }

    #[test]
    fn client_messages_round_trip() {
        let messages = [
            ClientRequest::SubscribeTicker(fixtures::symbol("BTCUSDT")),
            ClientRequest::UnsubscribeTicker(fixtures::symbol("BTCUSDT")),
            ClientRequest::Subscribe(vec![
                Channel::Trades,
                Channel::Ticker(fixtures::symbol("ETHUSDT")),
            ]),
            ClientRequest::Unsubscribe(vec![Channel::Alerts]),
            ClientRequest::ManualTrade(ManualTrade {
                symbol: fixtures::symbol("BTCUSDT"),
                side: Side::Sell,
                size: OrderSize::Quantity(fixtures::dec("0.25")),
                client_order_id: Some(ClientOrderId::parse("x1").unwrap()),
            }),
            ClientRequest::UpdatePosition {
                symbol: fixtures::symbol("BTCUSDT"),
                update: PositionUpdate {
                    stop_loss: LevelChange::Set(fixtures::dec("90")),
                    take_profit: LevelChange::Clear,
                },
            },
            ClientRequest::Ping,
        ];
        for (n, request) in messages.into_iter().enumerate() {
            let msg = ClientMessage {
                id: Some(json!(n)),
                request,
            };
            assert_eq!(ClientMessage::parse(&msg.to_json()).unwrap(), msg);
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let meta = EventMeta::new(Channel::Trades, 3, 1_700_000_000_123_456, false);
        let trade = fixtures::trade(1, "BTCUSDT", "100", "0.5");
        let messages = [
            ServerMessage::SubscriptionSuccess {
                message: "Subscribed to BTCUSDT".to_owned(),
                channels: vec![Channel::Trades],
                epoch: Some(3),
                id: Some(json!("a")),
            },
            ServerMessage::TickerUpdate {
                payload: fixtures::ticker("BTCUSDT", "100"),
                meta: EventMeta::new(Channel::Ticker(fixtures::symbol("BTCUSDT")), 1, 5, true),
            },
            ServerMessage::TradeNotification {
                payload: Box::new(trade.clone().into()),
                meta,
            },
            ServerMessage::TradeExecuted {
                payload: Box::new(TradeExecuted {
                    trade,
                    replayed: false,
                    note: Some("n".to_owned()),
                }),
                id: None,
            },
            ServerMessage::Pong {
                timestamp: 1,
                ts_us: 1_000_000,
                id: None,
            },
            ServerMessage::error(None, codes::UNKNOWN_TYPE, "Unknown message type"),
        ];
        for msg in messages {
            let back: ServerMessage = serde_json::from_str(&msg.to_json()).unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn seed_shapes_are_exact() {
        let trade = fixtures::trade(9, "BTCUSDT", "42000.5", "0.01");
        let frame = ServerMessage::TradeNotification {
            payload: Box::new(trade.into()),
            meta: EventMeta::new(Channel::Trades, 1, 1_704_067_200_000_001, false),
        };
        let value: Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(value["type"], "trade_notification");
        assert_eq!(value["timestamp"], 1_704_067_200);
        assert_eq!(value["ts_us"], 1_704_067_200_000_001_i64);
        assert_eq!(value["seq"], 1);
        let payload = &value["payload"];
        assert_eq!(payload["symbol"], "BTCUSDT");
        assert_eq!(payload["price"], "42000.5");
        assert_eq!(payload["quantity"], "0.01");
        assert_eq!(payload["type"], "buy");
        assert_eq!(payload["purchased_at"], "2024-01-01T00:00:00Z");
        assert!(value.get("snapshot").is_none());

        let ok = ServerMessage::SubscriptionSuccess {
            message: "Subscribed to BTCUSDT".to_owned(),
            channels: vec![],
            epoch: None,
            id: None,
        };
        let value: Value = serde_json::from_str(&ok.to_json()).unwrap();
        assert_eq!(value["type"], "subscription_success");
        assert_eq!(value["message"], "Subscribed to BTCUSDT");
    }
}
