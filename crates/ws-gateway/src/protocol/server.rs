//! What the server sends: every frame, tagged by `type`, and the fields pushed events share.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cryptobot_domain::{
    Alert, BotState, Candle, Channel, Order, OrderPage, OrderUpdate, PortfolioSummary, Position,
    Side, Signal, Ticker, Trade,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Payload of `order_placed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order as it stands after placing.
    pub order: Order,
    /// True when the `client_order_id` was seen before and this is that order now.
    pub replayed: bool,
    /// Advice, e.g. that a command without `client_order_id` is not idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Payload of `position_exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionExited {
    /// The sell of the whole position (origin `force_exit`).
    pub trade: Trade,
    /// The resting sell orders of the symbol canceled first (empty on a replay).
    pub canceled_orders: Vec<Order>,
    /// True when the `client_order_id` was seen before and this is that exit's trade.
    pub replayed: bool,
    /// Advice, e.g. that a command without `client_order_id` is not idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Payload of `orders_canceled` and of the `open_orders` snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderList {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
}

/// The parameters of a connection a client configures itself with, announced in `welcome`,
/// every subscribe ack and `subscriptions` (the `[ws]` settings of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionLimits {
    /// The server pings this often.
    pub heartbeat_interval_secs: u64,
    /// A connection silent this long is closed (4000).
    pub client_timeout_secs: u64,
    /// Inbound messages per second (bursts of the same size); 0 = unlimited.
    pub max_messages_per_sec: u32,
    /// Channels per connection, the default ones included.
    pub max_subscriptions: usize,
}

impl ConnectionLimits {
    /// The limits `config` enforces.
    #[must_use]
    pub const fn from_config(config: &crate::GatewayConfig) -> Self {
        Self {
            heartbeat_interval_secs: config.heartbeat_interval_secs,
            client_timeout_secs: config.client_timeout_secs,
            max_messages_per_sec: config.max_messages_per_sec,
            max_subscriptions: config.max_subscriptions,
        }
    }
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
        /// The connection's parameters.
        #[serde(flatten)]
        limits: ConnectionLimits,
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
        /// The connection's parameters.
        #[serde(flatten)]
        limits: ConnectionLimits,
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
    /// Reply to `place_order`.
    OrderPlaced {
        /// The order and whether it was replayed.
        payload: Box<OrderPlaced>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `cancel_order`.
    OrderCanceled {
        /// The order, canceled.
        payload: Box<Order>,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `cancel_all_orders`.
    OrdersCanceled {
        /// Every order canceled (none when nothing was open).
        payload: OrderList,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `list_orders`.
    Orders {
        /// The page.
        payload: OrderPage,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// An order changed (`orders` channel).
    OrderUpdate {
        /// What happened and the order after it.
        payload: Box<OrderUpdate>,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// A candle of `candles:<SYMBOL>:<interval>`: an update of the open candle, a closed one
    /// (`closed: true`), or the open candle as a snapshot on subscribe.
    Candle {
        /// The candle.
        payload: Candle,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// The open orders, sent on subscribing to `orders` (`snapshot: true`, `seq` the channel's
    /// last `seq` it includes).
    OpenOrders {
        /// The open orders.
        payload: OrderList,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// Reply to `update_position`.
    PositionUpdated {
        /// The position with its new levels.
        payload: Position,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Reply to `pause_trading` / `resume_trading`: the auto-trading state after the command.
    BotState {
        /// `state`, `changed_at`, `changed_by`.
        payload: BotState,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    /// Pushed on `bot` when the auto-trading state changed; also its snapshot on subscribe.
    BotStateUpdate {
        /// `state`, `changed_at`, `changed_by`.
        payload: BotState,
        /// Timing and ordering.
        #[serde(flatten)]
        meta: EventMeta,
    },
    /// Reply to `force_exit`: the sell of the whole position.
    PositionExited {
        /// The trade and the orders canceled for it.
        payload: Box<PositionExited>,
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
        /// The connection's parameters.
        #[serde(flatten)]
        limits: ConnectionLimits,
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
        /// The connection's parameters.
        #[serde(flatten)]
        limits: ConnectionLimits,
    },
    /// Reply to `list_subscriptions`.
    Subscriptions {
        /// The active channel set.
        channels: Vec<Channel>,
        /// The server's epoch.
        epoch: u64,
        /// The connection's parameters.
        #[serde(flatten)]
        limits: ConnectionLimits,
        /// Echo of the request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
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
        /// For a refused subscription: the channel (as sent) that made it fail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
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
            channel: None,
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
    use cryptobot_domain::fixtures;
    use serde_json::json;

    use super::*;
    use crate::protocol::codes;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        heartbeat_interval_secs: 15,
        client_timeout_secs: 45,
        max_messages_per_sec: 50,
        max_subscriptions: 64,
    };

    #[test]
    fn server_messages_round_trip() {
        let meta = EventMeta::new(Channel::Trades, 3, 1_700_000_000_123_456, false);
        let trade = fixtures::trade(1, "BTCUSDT", "100", "0.5");
        let messages = [
            ServerMessage::SubscriptionSuccess {
                message: "Subscribed to BTCUSDT".to_owned(),
                channels: vec![Channel::Trades],
                epoch: Some(3),
                limits: LIMITS,
                id: Some(json!("a")),
            },
            ServerMessage::Welcome {
                epoch: 3,
                version: "1".to_owned(),
                channels: vec![Channel::Trades],
                scopes: vec!["read".to_owned()],
                limits: LIMITS,
            },
            ServerMessage::Subscriptions {
                channels: vec![Channel::Alerts],
                epoch: 3,
                limits: LIMITS,
                id: Some(json!(1)),
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
            limits: LIMITS,
            id: None,
        };
        let value: Value = serde_json::from_str(&ok.to_json()).unwrap();
        assert_eq!(value["type"], "subscription_success");
        assert_eq!(value["message"], "Subscribed to BTCUSDT");
        // The limits are plain top-level fields, so a client configures itself from the ack.
        assert_eq!(value["heartbeat_interval_secs"], 15);
        assert_eq!(value["client_timeout_secs"], 45);
        assert_eq!(value["max_messages_per_sec"], 50);
        assert_eq!(value["max_subscriptions"], 64);
    }
}
