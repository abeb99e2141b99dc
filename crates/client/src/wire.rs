//! The gateway's frames as the client reads and writes them (docs/protocol.md).

use std::collections::BTreeMap;

use cryptobot_domain::{
    Alert, BotState, Candle, Channel, Event, Order, OrderUpdate, PortfolioSummary, Signal, Ticker,
    Trade,
};
use serde_json::{Value, json};

use crate::{ClientError, ErrorCode};

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Inbound {
    /// `welcome` (the first frame with `?welcome=1`).
    Welcome {
        epoch: u64,
        /// The server closes a silent peer after this; the client takes it as its idle timeout.
        client_timeout_secs: Option<u64>,
    },
    /// A pushed event.
    Push {
        channel: Channel,
        seq: Option<u64>,
        snapshot: bool,
        event: Event,
    },
    /// `open_orders`: the snapshot of the `orders` channel, as of `seq`.
    OpenOrders {
        seq: Option<u64>,
        orders: Vec<Order>,
    },
    /// The direct reply to the request with this `id`: the whole frame, or its error.
    Reply {
        id: u64,
        result: Result<Value, ClientError>,
    },
    /// `server_shutdown`: a close follows.
    Shutdown,
    /// Anything else (an `error` without `id`, a type of a newer server): ignored.
    Ignored,
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<Inbound, ClientError> {
    let frame: Value = serde_json::from_str(text).map_err(|err| protocol(&err))?;
    let kind = frame
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = frame.get("id").and_then(Value::as_u64);
    let event =
        |event: fn(Value) -> Result<Event, serde_json::Error>| -> Result<Inbound, ClientError> {
            let channel = frame
                .get("channel")
                .and_then(Value::as_str)
                .and_then(|name| Channel::parse(name).ok())
                .ok_or_else(|| ClientError::Protocol(format!("{kind} without a channel")))?;
            let payload = frame.get("payload").cloned().unwrap_or(Value::Null);
            Ok(Inbound::Push {
                channel,
                seq: frame.get("seq").and_then(Value::as_u64),
                snapshot: frame
                    .get("snapshot")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                event: event(payload).map_err(|err| protocol(&err))?,
            })
        };
    match kind {
        "welcome" => Ok(Inbound::Welcome {
            epoch: frame.get("epoch").and_then(Value::as_u64).unwrap_or(0),
            client_timeout_secs: frame.get("client_timeout_secs").and_then(Value::as_u64),
        }),
        "ticker_update" => event(|p| serde_json::from_value::<Ticker>(p).map(Event::Ticker)),
        "trade_notification" => {
            event(|p| serde_json::from_value::<Trade>(p).map(Event::TradeExecuted))
        }
        "portfolio_update" => {
            event(|p| serde_json::from_value::<PortfolioSummary>(p).map(Event::PortfolioChanged))
        }
        "signal" => event(|p| serde_json::from_value::<Signal>(p).map(Event::Signal)),
        "alert" => event(|p| serde_json::from_value::<Alert>(p).map(Event::Alert)),
        "order_update" => event(|p| {
            serde_json::from_value::<OrderUpdate>(p)
                .map(|update| Event::OrderUpdated(Box::new(update)))
        }),
        "candle" => event(|p| serde_json::from_value::<Candle>(p).map(Event::Candle)),
        "bot_state_update" => {
            event(|p| serde_json::from_value::<BotState>(p).map(Event::BotStateChanged))
        }
        "open_orders" => {
            let orders = frame
                .get("payload")
                .and_then(|payload| payload.get("orders"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(Inbound::OpenOrders {
                seq: frame.get("seq").and_then(Value::as_u64),
                orders: serde_json::from_value(orders).map_err(|err| protocol(&err))?,
            })
        }
        "server_shutdown" => Ok(Inbound::Shutdown),
        "error" => Ok(id.map_or(Inbound::Ignored, |id| Inbound::Reply {
            id,
            result: Err(ClientError::Server {
                code: ErrorCode::parse(frame.get("code").and_then(Value::as_str).unwrap_or("")),
                message: frame
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                status: None,
            }),
        })),
        _ => Ok(id.map_or(Inbound::Ignored, |id| Inbound::Reply {
            id,
            result: Ok(frame),
        })),
    }
}

fn protocol(err: &serde_json::Error) -> ClientError {
    ClientError::Protocol(err.to_string())
}

/// Builds a request frame.
pub(crate) fn request(id: u64, kind: &str, payload: Option<&Value>) -> String {
    let mut frame = json!({"type": kind, "id": id});
    if let Some(payload) = payload {
        frame["payload"] = payload.clone();
    }
    frame.to_string()
}

/// The payload of the `subscribe` that opens every connection: the wanted channels, and what
/// was received of them before (`resume`).
pub(crate) fn subscribe_payload<'a>(
    channels: impl IntoIterator<Item = &'a Channel>,
    resume: Option<(u64, &BTreeMap<Channel, u64>)>,
) -> Value {
    let channels: Vec<String> = channels.into_iter().map(ToString::to_string).collect();
    let mut payload = json!({ "channels": channels });
    if let Some((epoch, last_seq)) = resume {
        let last_seq: serde_json::Map<String, Value> = last_seq
            .iter()
            .map(|(channel, seq)| (channel.to_string(), Value::from(*seq)))
            .collect();
        payload["resume"] = json!({"epoch": epoch, "last_seq": last_seq});
    }
    payload
}

/// The `recovered` map of a subscribe ack (empty when nothing was resumed).
pub(crate) fn recovered(ack: &Value) -> BTreeMap<Channel, bool> {
    ack.get("recovered")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(name, ok)| Some((Channel::parse(name).ok()?, ok.as_bool()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The `channels` of an ack: the connection's active set.
pub(crate) fn channels(ack: &Value) -> Vec<Channel> {
    ack.get("channels")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|name| Channel::parse(name.as_str()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_frames_of_docs_protocol_md() {
        // TC0: a trade notification, with the seed's extra fields
        let trade = r#"{"type":"trade_notification","channel":"trades","payload":{"id":12,"symbol":"BTCUSDT","side":"buy","price":"42000.5","quantity":"0.01","fee":"0.42","notional":"420.005","realized_pnl":"-0.42","executed_at":"2024-01-01T00:00:00Z","client_order_id":null,"origin":"auto","purchased_at":"2024-01-01T00:00:00Z","type":"buy"},"timestamp":1704067200,"ts_us":1704067200000000,"seq":7}"#;
        let Inbound::Push {
            channel,
            seq,
            snapshot,
            event: Event::TradeExecuted(trade),
        } = parse(trade).unwrap()
        else {
            panic!("not a trade push");
        };
        assert_eq!(
            (channel, seq, snapshot, trade.id),
            (Channel::Trades, Some(7), false, 12)
        );
        // TC1: a snapshot
        let portfolio = r#"{"type":"portfolio_update","channel":"portfolio","payload":{"cash":"9579.575","positions":[],"positions_value":"0","total_value":"9579.575","realized_pnl":"-0.42","unrealized_pnl":"0","fees_paid":"0.42","trade_count":1,"as_of":"2024-01-01T00:00:05Z"},"timestamp":1704067205,"ts_us":1704067205000000,"seq":3,"snapshot":true}"#;
        assert!(matches!(
            parse(portfolio).unwrap(),
            Inbound::Push {
                snapshot: true,
                seq: Some(3),
                event: Event::PortfolioChanged(_),
                ..
            }
        ));
        // TC2: an error reply keeps its code
        let error = r#"{"type":"error","error":"unknown symbol DOGEUSDT","code":"unknown_symbol","channel":"ticker:DOGEUSDT","id":4}"#;
        let Inbound::Reply {
            id: 4,
            result: Err(err),
        } = parse(error).unwrap()
        else {
            panic!("not an error reply");
        };
        assert_eq!(err.code(), Some(&ErrorCode::UnknownSymbol));
        // TC3: an error without id (rate_limited) is not a reply
        let dropped = r#"{"type":"error","error":"more than 50 messages per second: message dropped","code":"rate_limited"}"#;
        assert_eq!(parse(dropped).unwrap(), Inbound::Ignored);
        // TC4: the welcome
        let welcome = r#"{"type":"welcome","epoch":1796122240975559,"version":"0.1.0","channels":["trades","portfolio","alerts"],"scopes":["read","trade"],"heartbeat_interval_secs":15,"client_timeout_secs":45,"max_messages_per_sec":50,"max_subscriptions":64}"#;
        assert_eq!(
            parse(welcome).unwrap(),
            Inbound::Welcome {
                epoch: 1_796_122_240_975_559,
                client_timeout_secs: Some(45)
            }
        );
        // TC5: an order update and the open-orders snapshot
        let update = r#"{"type":"order_update","payload":{"event":"filled","order":{"id":2,"client_order_id":null,"symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"0.001","amount":null,"price":"68250.00","stop_price":null,"time_in_force":"IOC","post_only":false,"status":"filled","reserved_cash":"0","reserved_quantity":"0","trade_id":1,"reason":null,"created_at":"2026-12-01T12:46:17.519162654Z","updated_at":"2026-12-01T12:46:17.519801014Z"}},"channel":"orders","timestamp":1796129177,"ts_us":1796129177521014,"seq":3}"#;
        let Inbound::Push {
            channel: Channel::Orders,
            seq: Some(3),
            event: Event::OrderUpdated(update),
            ..
        } = parse(update).unwrap()
        else {
            panic!("not an order update");
        };
        assert_eq!((update.order.id, update.order.trade_id), (2, Some(1)));
        let open = r#"{"type":"open_orders","payload":{"orders":[{"id":1,"client_order_id":"web-o1","symbol":"BTCUSDT","side":"buy","type":"limit","quantity":"0.01","amount":null,"price":"61750.00","stop_price":null,"time_in_force":"GTC","post_only":false,"status":"new","reserved_cash":"618.1175","reserved_quantity":"0","trade_id":null,"reason":null,"created_at":"2026-12-01T12:46:17.514837065Z","updated_at":"2026-12-01T12:46:17.514837065Z"}]},"channel":"orders","timestamp":1796129177,"ts_us":1796129177516037,"seq":1,"snapshot":true}"#;
        let Inbound::OpenOrders {
            seq: Some(1),
            mut orders,
        } = parse(open).unwrap()
        else {
            panic!("not an open-orders snapshot");
        };
        assert_eq!(orders[0].price, Some("61750.00".parse().unwrap()));
        // An update newer than the snapshot wins: the filled order leaves the open ones.
        let mut filled = orders[0].clone();
        filled.status = cryptobot_domain::OrderStatus::Filled;
        let mut other = update.order.clone();
        other.status = cryptobot_domain::OrderStatus::New;
        crate::orders::patch_open_orders(&mut orders, [other, filled]);
        assert_eq!(orders.iter().map(|o| o.id).collect::<Vec<_>>(), [2]);
        // TC6: garbage is a protocol error, not a panic
        assert!(matches!(parse("{"), Err(ClientError::Protocol(_))));
        assert!(matches!(
            parse(r#"{"type":"signal","payload":{}}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn the_opening_subscribe_carries_the_resume() {
        let seqs = BTreeMap::from([(Channel::Trades, 41)]);
        let payload = subscribe_payload(&[Channel::Trades, Channel::Signals], Some((9, &seqs)));
        assert_eq!(
            payload,
            json!({"channels":["trades","signals"],"resume":{"epoch":9,"last_seq":{"trades":41}}})
        );
        let ack = json!({"type":"subscribed","channels":["trades","signals"],"recovered":{"trades":false}});
        assert_eq!(recovered(&ack), BTreeMap::from([(Channel::Trades, false)]));
        assert_eq!(channels(&ack), vec![Channel::Trades, Channel::Signals]);
        assert_eq!(request(3, "ping", None), r#"{"id":3,"type":"ping"}"#);
    }
}
