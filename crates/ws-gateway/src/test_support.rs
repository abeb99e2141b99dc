//! Test support (`test-support` feature, and the crate's own tests): requests encoded as a
//! client writes them, for round-trip tests, the fuzz targets and benches. Not part of the
//! gateway's production API: the gateway only reads requests.

use cryptobot_domain::{OrderInput, OrderQueryInput, OrderRef, OrderSize, TradeInput};
use serde::Serialize;
use serde_json::Value;

use crate::protocol::{ClientMessage, ClientRequest};

/// The envelope as a client writes it (used by [`client_json`]).
#[derive(Serialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
}

/// Encodes `message` as a client would send it: [`ClientMessage::parse`] reads it back unchanged.
#[must_use]
pub fn client_json(message: &ClientMessage) -> String {
    let (kind, payload) = match &message.request {
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
        ClientRequest::ListSubscriptions => ("list_subscriptions", Value::Null),
        ClientRequest::ManualTrade(trade) => {
            let (quantity, amount) = match trade.size() {
                OrderSize::Quantity(q) => (Some(q.to_string()), None),
                OrderSize::Amount(a) => (None, Some(a.to_string())),
            };
            let payload = TradeInput {
                symbol: trade.symbol().to_string(),
                side: trade.side(),
                quantity,
                amount,
                client_order_id: trade.client_order_id().map(ToString::to_string),
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
        ClientRequest::PlaceOrder(request) => (
            "place_order",
            serde_json::to_value(OrderInput::from(request.as_ref())).unwrap_or(Value::Null),
        ),
        ClientRequest::CancelOrder(OrderRef::Id(id)) => {
            ("cancel_order", serde_json::json!({ "order_id": id }))
        }
        ClientRequest::CancelOrder(OrderRef::ClientOrderId(key)) => (
            "cancel_order",
            serde_json::json!({ "client_order_id": key }),
        ),
        ClientRequest::CancelAllOrders(symbol) => (
            "cancel_all_orders",
            symbol
                .as_ref()
                .map_or(Value::Null, |s| serde_json::json!({ "symbol": s })),
        ),
        ClientRequest::ListOrders(query) => {
            let input = OrderQueryInput {
                status: query.status.map(|status| match status {
                    cryptobot_domain::StatusFilter::Open => "open".to_owned(),
                    cryptobot_domain::StatusFilter::Is(status) => status.as_str().to_owned(),
                }),
                symbol: query.symbol.as_ref().map(ToString::to_string),
                client_order_id: query.client_order_id.as_ref().map(ToString::to_string),
                before_id: query.before_id,
                after_id: query.after_id,
                limit: Some(query.limit),
            };
            (
                "list_orders",
                serde_json::to_value(input).unwrap_or(Value::Null),
            )
        }
        ClientRequest::Ping => ("ping", Value::Null),
        // The principal is the connection's, not part of the frame.
        ClientRequest::SetTradingState { state, .. } => (
            match state {
                cryptobot_domain::TradingState::Paused => "pause_trading",
                cryptobot_domain::TradingState::Running => "resume_trading",
            },
            Value::Null,
        ),
        ClientRequest::ForceExit(request) => {
            let mut fields = serde_json::Map::new();
            fields.insert(
                "symbol".to_owned(),
                Value::String(request.symbol.to_string()),
            );
            if let Some(key) = &request.client_order_id {
                fields.insert("client_order_id".to_owned(), Value::String(key.to_string()));
            }
            ("force_exit", Value::Object(fields))
        }
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
        id: message.id.clone(),
    };
    serde_json::to_string(&raw).unwrap_or_default()
}
