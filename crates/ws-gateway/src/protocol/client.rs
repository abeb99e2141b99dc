//! What clients send: the envelope, each request's payload, and their parsing with the seed's
//! texts and stable codes.

use std::collections::BTreeMap;

use cryptobot_domain::{
    Channel, ClientOrderId, DomainError, ForceExitRequest, OrderInput, OrderQuery, OrderQueryInput,
    OrderRef, OrderRequest, PositionUpdate, PositionUpdateInput, Symbol, TradeInput, TradeOrigin,
    TradeRequest, TradingState,
};
use serde::Deserialize;
use serde_json::Value;

use super::codes;
use super::server::ServerMessage;

/// The message types with a payload besides the seed's ticker subscriptions.
const KNOWN_TYPES: [&str; 10] = [
    "subscribe",
    "resume",
    "unsubscribe",
    "manual_trade",
    "update_position",
    "place_order",
    "cancel_order",
    "cancel_all_orders",
    "list_orders",
    "force_exit",
];

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
    /// `list_subscriptions`: the active channel set.
    ListSubscriptions,
    /// `manual_trade {symbol, side, quantity | amount, client_order_id}` (seed), validated; its
    /// origin is `manual`.
    ManualTrade(TradeRequest),
    /// `update_position {symbol, stop_loss, take_profit}` (seed).
    UpdatePosition {
        /// The position's symbol.
        symbol: Symbol,
        /// The level changes.
        update: PositionUpdate,
    },
    /// `place_order {symbol, side, type, quantity | amount, price, stop_price, time_in_force,
    /// post_only, client_order_id}`.
    PlaceOrder(Box<OrderRequest>),
    /// `cancel_order {order_id | client_order_id}`.
    CancelOrder(OrderRef),
    /// `cancel_all_orders {symbol?}`.
    CancelAllOrders(Option<Symbol>),
    /// `list_orders {status?, symbol?, client_order_id?, before_id?, after_id?, limit?}`.
    ListOrders(OrderQuery),
    /// `ping`.
    Ping,
    /// `pause_trading` / `resume_trading`: set the auto-trading state; `changed_by` is the
    /// connection's principal (filled in after parsing).
    SetTradingState {
        /// `paused` or `running`.
        state: TradingState,
        /// Who asked.
        changed_by: Option<String>,
    },
    /// `force_exit {symbol, client_order_id?}`: sell the whole position.
    ForceExit(ForceExitRequest),
    /// `subscribe {channels, resume}` or `resume {epoch, last_seq}`: subscribe and replay what was
    /// missed since the given `seq` of each channel.
    Resume(ResumeRequest),
}

impl ClientRequest {
    /// The message `type` that asked for it: the `command` label of `cryptobot_command_seconds`
    /// (one of `metrics::COMMANDS`).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::SubscribeTicker(_) => "subscribe_ticker",
            Self::UnsubscribeTicker(_) => "unsubscribe_ticker",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::ListSubscriptions => "list_subscriptions",
            Self::ManualTrade(_) => "manual_trade",
            Self::UpdatePosition { .. } => "update_position",
            Self::PlaceOrder(_) => "place_order",
            Self::CancelOrder(_) => "cancel_order",
            Self::CancelAllOrders(_) => "cancel_all_orders",
            Self::ListOrders(_) => "list_orders",
            Self::Ping => "ping",
            Self::SetTradingState {
                state: TradingState::Paused,
                ..
            } => "pause_trading",
            Self::SetTradingState { .. } => "resume_trading",
            Self::ForceExit(_) => "force_exit",
            Self::Resume(request) if request.standalone => "resume",
            Self::Resume(_) => "subscribe",
        }
    }
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

/// A request that could not be understood: becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The `id` of the request, when it could be read.
    pub id: Option<Value>,
    /// Stable machine code.
    pub code: &'static str,
    /// Human-readable text (the seed's exact texts where the seed defines one).
    pub message: String,
    /// The channel name (as sent, clipped) that made a subscription request fail.
    pub channel: Option<String>,
}

impl RequestError {
    fn new(id: Option<Value>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            channel: None,
        }
    }

    /// Builds the `error` frame for this error.
    #[must_use]
    pub fn into_message(self) -> ServerMessage {
        ServerMessage::Error {
            error: self.message,
            code: self.code.to_owned(),
            channel: self.channel,
            id: self.id,
        }
    }
}

/// The envelope of a request, read but with its payload not yet parsed: enough to echo the `id`
/// and to decide on the message's `type` (the scope check) before the payload is looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The `type`.
    pub kind: String,
    /// The `payload`, `null` when absent.
    pub payload: Value,
    /// The `id`, when present and not `null`.
    pub id: Option<Value>,
}

impl Envelope {
    /// Reads the envelope of one text frame.
    ///
    /// # Errors
    /// `invalid_message` ("Invalid message format", seed) when the text is not a JSON object with
    /// a string `type`; the error carries the `id` whenever the text is an object with one.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let invalid = |id| RequestError::new(id, codes::INVALID_MESSAGE, "Invalid message format");
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
            return Err(invalid(None));
        };
        let id = fields.remove("id").filter(|id| !id.is_null());
        let Some(Value::String(kind)) = fields.remove("type") else {
            return Err(invalid(id));
        };
        Ok(Self {
            kind,
            payload: fields.remove("payload").unwrap_or(Value::Null),
            id,
        })
    }

    /// Parses the payload for the envelope's `type`.
    ///
    /// # Errors
    /// A [`RequestError`] with the seed's texts: "Unknown message type" (`unknown_type`),
    /// "Invalid payload for ticker subscription" (`invalid_payload`), or another
    /// `invalid_payload`, `unknown_channel` or domain validation code (`invalid_symbol`,
    /// `invalid_client_order_id`, `invalid_decimal`, `invalid_size`).
    #[allow(clippy::too_many_lines, reason = "one arm per message type")]
    pub fn into_message(self) -> Result<ClientMessage, RequestError> {
        let Self { kind, payload, id } = self;
        let invalid = |what: &str, err: &dyn std::fmt::Display| {
            RequestError::new(
                id.clone(),
                codes::INVALID_PAYLOAD,
                format!("Invalid payload for {what}: {}", clip(&err.to_string())),
            )
        };
        // The domain's own message, the one the REST API answers with too.
        let domain = |err: &DomainError| RequestError::new(id.clone(), err.code(), err.to_string());
        // serde reads a struct from a JSON array too (`[null, null]` as the fields in order): a
        // payload is an object, whatever the type.
        let ticker = matches!(kind.as_str(), "subscribe_ticker" | "unsubscribe_ticker");
        if payload.is_array() && (ticker || KNOWN_TYPES.contains(&kind.as_str())) {
            return Err(if ticker {
                RequestError::new(
                    id,
                    codes::INVALID_PAYLOAD,
                    "Invalid payload for ticker subscription",
                )
            } else {
                invalid(&kind, &"expected an object, got an array")
            });
        }
        let request = match kind.as_str() {
            "subscribe_ticker" | "unsubscribe_ticker" => {
                // The seed's text for every bad payload; a string that is not a symbol gets the
                // REST API's code.
                let seed = |code| {
                    RequestError::new(id.clone(), code, "Invalid payload for ticker subscription")
                };
                let text = serde_json::from_value::<SymbolPayload>(payload)
                    .map_err(|_| seed(codes::INVALID_PAYLOAD))?
                    .symbol;
                let symbol = Symbol::parse(&text).map_err(|err| seed(err.code()))?;
                if kind == "subscribe_ticker" {
                    ClientRequest::SubscribeTicker(symbol)
                } else {
                    ClientRequest::UnsubscribeTicker(symbol)
                }
            }
            "subscribe" => {
                let payload = serde_json::from_value::<SubscribePayload>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                let channels = parse_channels(&payload.channels, &id)?;
                match payload.resume {
                    None => ClientRequest::Subscribe(channels),
                    Some(resume) => {
                        ClientRequest::Resume(resume_request(channels, resume, false, &id)?)
                    }
                }
            }
            "resume" => {
                let payload = serde_json::from_value::<ResumePayload>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                ClientRequest::Resume(resume_request(Vec::new(), payload, true, &id)?)
            }
            "unsubscribe" => {
                let names = serde_json::from_value::<ChannelsPayload>(payload)
                    .map_err(|err| invalid(&kind, &err))?
                    .channels;
                ClientRequest::Unsubscribe(parse_channels(&names, &id)?)
            }
            "list_subscriptions" => ClientRequest::ListSubscriptions,
            "manual_trade" => {
                let input = serde_json::from_value::<TradeInput>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                let request = input
                    .into_request(TradeOrigin::Manual)
                    .map_err(|err| domain(&err))?;
                ClientRequest::ManualTrade(request)
            }
            "update_position" => {
                // Shape first (as for manual_trade), then the symbol's spelling, then the levels.
                let mut fields = match payload {
                    Value::Object(fields) => fields,
                    _ => return Err(invalid(&kind, &"expected an object")),
                };
                let symbol = match fields.remove("symbol") {
                    Some(Value::String(symbol)) => symbol,
                    Some(_) => return Err(invalid(&kind, &"symbol must be a string")),
                    None => return Err(invalid(&kind, &"missing field `symbol`")),
                };
                let input = serde_json::from_value::<PositionUpdateInput>(Value::Object(fields))
                    .map_err(|err| invalid(&kind, &err))?;
                let symbol = Symbol::parse(&symbol).map_err(|err| domain(&err))?;
                let update = input.parse().map_err(|err| domain(&err))?;
                ClientRequest::UpdatePosition { symbol, update }
            }
            "place_order" => {
                let input = serde_json::from_value::<OrderInput>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                let request = input.into_request().map_err(|err| domain(&err))?;
                ClientRequest::PlaceOrder(Box::new(request))
            }
            "cancel_order" => {
                let target = serde_json::from_value::<CancelPayload>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                match (target.order_id, target.client_order_id) {
                    (Some(order_id), None) => ClientRequest::CancelOrder(OrderRef::Id(order_id)),
                    (None, Some(text)) => {
                        let key = ClientOrderId::parse(&text).map_err(|err| domain(&err))?;
                        ClientRequest::CancelOrder(OrderRef::ClientOrderId(key))
                    }
                    _ => {
                        return Err(invalid(
                            &kind,
                            &"exactly one of order_id or client_order_id is required",
                        ));
                    }
                }
            }
            "cancel_all_orders" => {
                let payload = if payload.is_null() {
                    CancelAllPayload::default()
                } else {
                    serde_json::from_value::<CancelAllPayload>(payload)
                        .map_err(|err| invalid(&kind, &err))?
                };
                let symbol = payload
                    .symbol
                    .as_deref()
                    .map(Symbol::parse)
                    .transpose()
                    .map_err(|err| domain(&err))?;
                ClientRequest::CancelAllOrders(symbol)
            }
            "list_orders" => {
                let input = if payload.is_null() {
                    OrderQueryInput::default()
                } else {
                    serde_json::from_value::<OrderQueryInput>(payload)
                        .map_err(|err| invalid(&kind, &err))?
                };
                ClientRequest::ListOrders(input.parse().map_err(|err| domain(&err))?)
            }
            "ping" => ClientRequest::Ping,
            "pause_trading" | "resume_trading" => ClientRequest::SetTradingState {
                state: if kind == "pause_trading" {
                    TradingState::Paused
                } else {
                    TradingState::Running
                },
                changed_by: None,
            },
            "force_exit" => {
                let payload = serde_json::from_value::<ForceExitPayload>(payload)
                    .map_err(|err| invalid(&kind, &err))?;
                let symbol = Symbol::parse(&payload.symbol).map_err(|err| domain(&err))?;
                let client_order_id = payload
                    .client_order_id
                    .as_deref()
                    .map(ClientOrderId::parse)
                    .transpose()
                    .map_err(|err| domain(&err))?;
                ClientRequest::ForceExit(ForceExitRequest {
                    symbol,
                    client_order_id,
                    requested_by: None,
                })
            }
            _ => {
                return Err(RequestError::new(
                    id,
                    codes::UNKNOWN_TYPE,
                    "Unknown message type",
                ));
            }
        };
        Ok(ClientMessage { id, request })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelPayload {
    #[serde(default)]
    order_id: Option<u64>,
    #[serde(default)]
    client_order_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceExitPayload {
    symbol: String,
    #[serde(default)]
    client_order_id: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelAllPayload {
    #[serde(default)]
    symbol: Option<String>,
}

#[derive(Deserialize)]
struct SymbolPayload {
    symbol: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsPayload {
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribePayload {
    channels: Vec<String>,
    #[serde(default)]
    resume: Option<ResumePayload>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumePayload {
    epoch: u64,
    last_seq: BTreeMap<String, u64>,
}

impl ClientMessage {
    /// Parses one text frame: [`Envelope::parse`], then [`Envelope::into_message`].
    ///
    /// # Errors
    /// Those of both steps.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        Envelope::parse(text)?.into_message()
    }
}

/// Builds a [`ResumeRequest`]: the resumed channels are subscribed too (after `channels`).
fn resume_request(
    mut channels: Vec<Channel>,
    payload: ResumePayload,
    standalone: bool,
    id: &Option<Value>,
) -> Result<ResumeRequest, RequestError> {
    let names: Vec<String> = payload.last_seq.keys().cloned().collect();
    let resumed = parse_channels(&names, id)?;
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

/// Parses channel names, all or nothing; the error names the first bad channel in `channel`.
fn parse_channels(names: &[String], id: &Option<Value>) -> Result<Vec<Channel>, RequestError> {
    names
        .iter()
        .map(|name| {
            Channel::parse(name).map_err(|err| {
                let (code, message) = match err {
                    cryptobot_domain::event::ChannelParseError::Unknown => (
                        codes::UNKNOWN_CHANNEL,
                        format!(
                            "unknown channel {:?}: expected ticker:<SYMBOL>, candles:<SYMBOL>:<1m|5m|1h|1d>, trades, portfolio, signals, alerts, orders or bot",
                            clip(name)
                        ),
                    ),
                    cryptobot_domain::event::ChannelParseError::Symbol(err) => {
                        (err.code(), err.to_string())
                    }
                };
                RequestError {
                    channel: Some(clip(name)),
                    ..RequestError::new(id.clone(), code, message)
                }
            })
        })
        .collect()
}

/// Cuts a message to [`MAX_DETAIL`] characters so hostile input is not echoed at length.
fn clip(text: &str) -> String {
    text.chars().take(MAX_DETAIL).collect()
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::{LevelChange, OrderSize, Side, fixtures};
    use serde_json::json;

    use super::*;
    use crate::test_support::client_json;

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
        // TC3: bad ticker payloads (the seed's text; a misspelled symbol has REST's code)
        assert_eq!(
            parse_err(r#"{"type":"subscribe_ticker","payload":{"symbol":"btc"}}"#),
            (
                "Invalid payload for ticker subscription".to_owned(),
                "invalid_symbol"
            )
        );
        for bad in [
            r#"{"type":"subscribe_ticker"}"#,
            r#"{"type":"subscribe_ticker","payload":{"symbol":42}}"#,
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
    fn array_payloads_are_refused_for_every_type() {
        // serde alone would read `[null, null]` as the fields of a struct, in order.
        for (text, message) in [
            (
                r#"{"type":"subscribe_ticker","payload":["BTCUSDT"]}"#,
                "Invalid payload for ticker subscription",
            ),
            (
                r#"{"type":"unsubscribe_ticker","payload":["BTCUSDT"]}"#,
                "Invalid payload for ticker subscription",
            ),
            (
                r#"{"type":"subscribe","payload":[["trades"]]}"#,
                "Invalid payload for subscribe: expected an object, got an array",
            ),
            (
                r#"{"type":"unsubscribe","payload":[["trades"]]}"#,
                "Invalid payload for unsubscribe: expected an object, got an array",
            ),
            (
                r#"{"type":"resume","payload":[1,{}]}"#,
                "Invalid payload for resume: expected an object, got an array",
            ),
            (
                r#"{"type":"manual_trade","payload":["BTCUSDT","buy","1"]}"#,
                "Invalid payload for manual_trade: expected an object, got an array",
            ),
            (
                r#"{"type":"update_position","payload":[null,null]}"#,
                "Invalid payload for update_position: expected an object, got an array",
            ),
            (
                r#"{"type":"place_order","payload":["BTCUSDT","buy","limit","0.001",null,"1000"]}"#,
                "Invalid payload for place_order: expected an object, got an array",
            ),
            (
                r#"{"type":"cancel_order","payload":[5,null]}"#,
                "Invalid payload for cancel_order: expected an object, got an array",
            ),
            (
                r#"{"type":"cancel_all_orders","payload":[]}"#,
                "Invalid payload for cancel_all_orders: expected an object, got an array",
            ),
            (
                r#"{"type":"list_orders","payload":[]}"#,
                "Invalid payload for list_orders: expected an object, got an array",
            ),
        ] {
            assert_eq!(
                parse_err(text),
                (message.to_owned(), "invalid_payload"),
                "{text}"
            );
        }
        // A type without a payload ignores whatever is there, as before.
        assert!(ClientMessage::parse(r#"{"type":"ping","payload":[1]}"#).is_ok());
    }

    #[test]
    fn errors_echo_the_id_when_readable() {
        // TC0: the id is echoed whenever the frame is an object with one, even without a type
        for (text, id) in [
            (r#"{"type":5,"id":77}"#, Some(json!(77))),
            (r#"{"id":78}"#, Some(json!(78))),
            (r#"{"id":{"k":[1]},"type":null}"#, Some(json!({"k":[1]}))),
            (r#"{"type":"nope","id":null,"x":1}"#, None),
            (r#"[{"id":1}]"#, None),
            ("not json", None),
        ] {
            assert_eq!(ClientMessage::parse(text).unwrap_err().id, id, "{text}");
        }
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
        assert_eq!(trade.size(), OrderSize::Amount(fixtures::dec("100.5")));
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
            // TC5: a string where an object is expected
            r#""BTCUSDT""#,
        ] {
            let text = format!(r#"{{"type":"manual_trade","payload":{bad}}}"#);
            assert_eq!(parse_err(&text).1, "invalid_payload", "{bad}");
        }
        // TC6: both sizes or neither: the domain's message, as the REST API words it
        for bad in [
            r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1","amount":"1"}"#,
            r#"{"symbol":"BTCUSDT","side":"buy"}"#,
        ] {
            let text = format!(r#"{{"type":"manual_trade","payload":{bad}}}"#);
            assert_eq!(
                parse_err(&text),
                (DomainError::SizeRequired.to_string(), "invalid_payload"),
                "{bad}"
            );
        }
        // TC7: field validation gets the REST API's codes
        for (bad, code) in [
            (
                r#"{"symbol":"btcusdt","side":"buy","quantity":"1"}"#,
                "invalid_symbol",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1","client_order_id":"bad id!"}"#,
                "invalid_client_order_id",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1","client_order_id":""}"#,
                "invalid_client_order_id",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","quantity":"lots"}"#,
                "invalid_decimal",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","amount":"2_0"}"#,
                "invalid_decimal",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","quantity":"1e-3"}"#,
                "invalid_decimal",
            ),
            (
                r#"{"symbol":"BTCUSDT","side":"buy","quantity":"0"}"#,
                "invalid_size",
            ),
        ] {
            let text = format!(r#"{{"type":"manual_trade","payload":{bad}}}"#);
            assert_eq!(parse_err(&text).1, code, "{bad}");
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
        assert_eq!(
            parse_err(
                r#"{"type":"update_position","payload":{"symbol":"ETHUSDT","take_profit":".5"}}"#
            )
            .1,
            "invalid_decimal"
        );
        assert_eq!(
            parse_err(r#"{"type":"update_position","payload":{"symbol":"eth","stop_loss":"1"}}"#).1,
            "invalid_symbol"
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
        let err = ClientMessage::parse(
            r#"{"type":"subscribe","id":3,"payload":{"channels":["signals","fills"]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.channel.as_deref()),
            ("unknown_channel", Some("fills"))
        );
        let frame: Value = serde_json::from_str(&err.into_message().to_json()).unwrap();
        assert_eq!(
            frame["channel"], "fills",
            "the offending channel, machine-readable"
        );
        let err =
            ClientMessage::parse(r#"{"type":"subscribe","payload":{"channels":["ticker:btc"]}}"#)
                .unwrap_err();
        assert_eq!(
            (err.code, err.channel.as_deref()),
            ("invalid_symbol", Some("ticker:btc"))
        );
        assert_eq!(
            parse_err(r#"{"type":"unsubscribe","payload":{"channels":"trades"}}"#).1,
            "invalid_payload"
        );
    }

    #[test]
    fn order_commands_check_their_payloads() {
        let cases = [
            // TC0: place_order shares the REST body's checks
            (
                r#"{"type":"place_order","id":1,"payload":{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1"}}"#,
                "invalid_order",
            ),
            (
                r#"{"type":"place_order","id":1,"payload":{"symbol":"BTCUSDT","side":"buy","type":"iceberg","quantity":"1"}}"#,
                "invalid_payload",
            ),
            (
                r#"{"type":"place_order","id":1,"payload":{"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"1","price":1}}"#,
                "invalid_payload",
            ),
            // TC1: cancel_order needs exactly one reference
            (
                r#"{"type":"cancel_order","id":1,"payload":{}}"#,
                "invalid_payload",
            ),
            (
                r#"{"type":"cancel_order","id":1,"payload":{"order_id":1,"client_order_id":"a"}}"#,
                "invalid_payload",
            ),
            (
                r#"{"type":"cancel_order","id":1,"payload":{"client_order_id":"bad id"}}"#,
                "invalid_client_order_id",
            ),
            // TC2: cancel_all_orders and list_orders validate what they get
            (
                r#"{"type":"cancel_all_orders","id":1,"payload":{"symbol":"btc"}}"#,
                "invalid_symbol",
            ),
            (
                r#"{"type":"list_orders","id":1,"payload":{"limit":0}}"#,
                "invalid_limit",
            ),
            (
                r#"{"type":"list_orders","id":1,"payload":{"status":"done"}}"#,
                "invalid_query",
            ),
            (
                r#"{"type":"list_orders","id":1,"payload":{"page":2}}"#,
                "invalid_payload",
            ),
        ];
        for (text, code) in cases {
            let err = ClientMessage::parse(text).unwrap_err();
            assert_eq!(err.code, code, "{text}: {}", err.message);
            assert_eq!(err.id, Some(json!(1)));
        }
        // TC3: no payload at all lists the newest 50, cancels all
        let list = ClientMessage::parse(r#"{"type":"list_orders"}"#).unwrap();
        assert_eq!(
            list.request,
            ClientRequest::ListOrders(cryptobot_domain::OrderQuery::latest(50))
        );
        let all = ClientMessage::parse(r#"{"type":"cancel_all_orders"}"#).unwrap();
        assert_eq!(all.request, ClientRequest::CancelAllOrders(None));
    }

    #[test]
    fn force_exit_payloads_are_checked_in_the_documented_order() {
        // TC0..: shape first, then the symbol's spelling, then the key
        let cases = [
            (r#"{"type":"force_exit","id":1}"#, codes::INVALID_PAYLOAD),
            (
                r#"{"type":"force_exit","id":1,"payload":[]}"#,
                codes::INVALID_PAYLOAD,
            ),
            (
                r#"{"type":"force_exit","id":1,"payload":{}}"#,
                codes::INVALID_PAYLOAD,
            ),
            (
                r#"{"type":"force_exit","id":1,"payload":{"symbol":"BTCUSDT","x":1}}"#,
                codes::INVALID_PAYLOAD,
            ),
            (
                r#"{"type":"force_exit","id":1,"payload":{"symbol":"btc","client_order_id":""}}"#,
                "invalid_symbol",
            ),
            (
                r#"{"type":"force_exit","id":1,"payload":{"symbol":"BTCUSDT","client_order_id":"a b"}}"#,
                "invalid_client_order_id",
            ),
        ];
        for (text, code) in cases {
            let err = ClientMessage::parse(text).unwrap_err();
            assert_eq!(err.code, code, "{text}: {}", err.message);
            assert_eq!(err.id, Some(json!(1)));
        }
        // A payload on pause / resume is ignored, as on ping.
        let pause = ClientMessage::parse(r#"{"type":"pause_trading","payload":[1]}"#).unwrap();
        assert_eq!(
            pause.request,
            ClientRequest::SetTradingState {
                state: TradingState::Paused,
                changed_by: None
            }
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
            ClientRequest::ManualTrade(
                TradeRequest::new(
                    fixtures::symbol("BTCUSDT"),
                    Side::Sell,
                    OrderSize::Quantity(fixtures::dec("0.25")),
                    Some(ClientOrderId::parse("x1").unwrap()),
                    TradeOrigin::Manual,
                )
                .unwrap(),
            ),
            ClientRequest::UpdatePosition {
                symbol: fixtures::symbol("BTCUSDT"),
                update: PositionUpdate {
                    stop_loss: LevelChange::Set(fixtures::dec("90")),
                    take_profit: LevelChange::Clear,
                },
            },
            ClientRequest::Ping,
            ClientRequest::ListSubscriptions,
            ClientRequest::PlaceOrder(Box::new(
                OrderInput {
                    symbol: "BTCUSDT".into(),
                    side: Side::Buy,
                    order_type: cryptobot_domain::OrderType::StopLimit,
                    quantity: Some("0.10".into()),
                    amount: None,
                    price: Some("101.5".into()),
                    stop_price: Some("101".into()),
                    time_in_force: None,
                    post_only: None,
                    client_order_id: Some("o-1".into()),
                }
                .into_request()
                .unwrap(),
            )),
            ClientRequest::CancelOrder(OrderRef::Id(7)),
            ClientRequest::CancelOrder(OrderRef::ClientOrderId(
                ClientOrderId::parse("o-1").unwrap(),
            )),
            ClientRequest::CancelAllOrders(None),
            ClientRequest::CancelAllOrders(Some(fixtures::symbol("ETHUSDT"))),
            ClientRequest::ListOrders(cryptobot_domain::OrderQuery {
                status: Some(cryptobot_domain::StatusFilter::Open),
                symbol: Some(fixtures::symbol("ETHUSDT")),
                client_order_id: None,
                before_id: Some(4),
                after_id: None,
                limit: 20,
            }),
            ClientRequest::SetTradingState {
                state: TradingState::Paused,
                changed_by: None,
            },
            ClientRequest::SetTradingState {
                state: TradingState::Running,
                changed_by: None,
            },
            ClientRequest::ForceExit(ForceExitRequest {
                symbol: fixtures::symbol("BTCUSDT"),
                client_order_id: Some(ClientOrderId::parse("x-1").unwrap()),
                requested_by: None,
            }),
            ClientRequest::ForceExit(ForceExitRequest {
                symbol: fixtures::symbol("ETHUSDT"),
                client_order_id: None,
                requested_by: None,
            }),
        ];
        for (n, request) in messages.into_iter().enumerate() {
            let msg = ClientMessage {
                id: Some(json!(n)),
                request,
            };
            assert_eq!(ClientMessage::parse(&client_json(&msg)).unwrap(), msg);
        }
    }
}
