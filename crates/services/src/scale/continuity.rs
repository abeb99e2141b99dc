use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{Channel, Event, Trade};

use super::{RedisSettings, follower};
use crate::{Envelope, Inherited};

/// What the streams of a key prefix hold when an engine that took the lease starts: the epoch
/// they belong to and the tail of each channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsState {
    /// `{prefix}:epoch`; `None` when Redis holds none (first start, or a restart of Redis
    /// without persistence).
    pub epoch: Option<u64>,
    /// Per channel with at least one entry.
    pub channels: HashMap<Channel, ChannelTail>,
}

/// The end of one channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelTail {
    /// The `seq` of its last entry (a hole marker included).
    pub last_seq: u64,
    /// The retained envelopes of the epoch, oldest first, contiguous up to `last_seq` (empty
    /// when the last entries cannot be read or are of another epoch).
    pub history: Vec<Arc<Envelope>>,
    /// The epoch of the last readable entry.
    pub last_epoch: Option<u64>,
    /// The last readable trade (trades) or the latest status per order (orders).
    pub last_trade: Option<Trade>,
    /// Last published status per order id (orders only).
    pub orders: HashMap<u64, cryptobot_domain::OrderStatus>,
}

/// Reads the epoch and, per channel, up to `history` of the newest entries (at least one).
///
/// # Errors
/// A message when Redis does not answer or answers something else than streams.
pub async fn read_streams(
    settings: &RedisSettings,
    history: usize,
) -> Result<StreamsState, String> {
    let client = redis::Client::open(settings.url.as_str()).map_err(|err| err.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|err| err.to_string())?;
    let epoch: Option<u64> = redis::cmd("GET")
        .arg(settings.epoch_key())
        .query_async(&mut conn)
        .await
        .map_err(|err| err.to_string())?;
    let mut state = StreamsState {
        epoch,
        channels: HashMap::new(),
    };
    for channel in &settings.channels {
        let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(settings.stream_key(channel))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(history.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|err| err.to_string())?;
        if let Some(tail) = tail_of(channel, epoch, newest.ids.into_iter().rev()) {
            state.channels.insert(channel.clone(), tail);
        }
    }
    Ok(state)
}

/// The tail of one channel from its entries, oldest first; `None` without entries.
fn tail_of(
    channel: &Channel,
    epoch: Option<u64>,
    entries: impl Iterator<Item = redis::streams::StreamId>,
) -> Option<ChannelTail> {
    let mut tail = ChannelTail::default();
    let mut any = false;
    for entry in entries {
        any = true;
        let Some(seq) = entry
            .id
            .strip_suffix("-0")
            .and_then(|seq| seq.parse::<u64>().ok())
        else {
            tail.history.clear();
            continue;
        };
        tail.last_seq = seq;
        if entry.map.contains_key("hole") {
            tail.history.clear();
            continue;
        }
        let Ok((entry_epoch, envelope)) = follower::decode(channel, &entry) else {
            tail.history.clear();
            continue;
        };
        tail.last_epoch = Some(entry_epoch);
        match &envelope.event {
            Event::TradeExecuted(trade) => tail.last_trade = Some(trade.clone()),
            Event::OrderUpdated(update) => {
                tail.orders.insert(update.order.id, update.order.status);
            }
            _ => {}
        }
        let follows = tail
            .history
            .last()
            .is_none_or(|last| last.seq + 1 == envelope.seq);
        if Some(entry_epoch) != epoch || !follows {
            tail.history.clear();
        }
        if Some(entry_epoch) == epoch {
            tail.history.push(Arc::new(envelope));
        }
    }
    any.then_some(tail)
}

/// What the storage holds, to compare with the streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMarks {
    /// Highest trade id (0 without trades).
    pub last_trade: u64,
    /// The stored trade with the id of the streams' last trade, if any.
    pub trade_at_streamed: Option<Trade>,
    /// Highest order id (0 without orders).
    pub last_order: u64,
}

/// How an engine that took the lease starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The streams describe the storage's books: the epoch and every channel's `seq` go on.
    Continue {
        /// The epoch continued.
        epoch: u64,
        /// Each channel's tail, as read.
        channels: HashMap<Channel, ChannelTail>,
        /// What the previous run published of the books.
        inherited: Inherited,
    },
    /// Continuity cannot be proven: a new epoch, as on a first start.
    NewEpoch(String),
}

impl Continuity {
    /// Decides from the streams and the storage: the epoch continues only when Redis holds an
    /// epoch, its trades stream ends with a trade of that epoch, and the storage holds that very
    /// trade (and every order the orders stream names). A wiped or different database, a Redis
    /// restarted without persistence, or streams of another epoch start a new one.
    #[must_use]
    pub fn decide(state: StreamsState, stored: &StoredMarks) -> Self {
        let Some(epoch) = state.epoch else {
            return Self::NewEpoch(
                "Redis holds no epoch (first start, or Redis restarted without its data)".into(),
            );
        };
        for (channel, tail) in &state.channels {
            if let Some(other) = tail.last_epoch.filter(|other| *other != epoch) {
                return Self::NewEpoch(format!(
                    "the stream of {channel} ends with epoch {other}, not the announced {epoch}"
                ));
            }
        }
        let Some(trades) = state.channels.get(&Channel::Trades) else {
            return Self::NewEpoch(
                "the trades stream is empty: nothing proves which stored trades its clients saw"
                    .into(),
            );
        };
        let Some(streamed) = &trades.last_trade else {
            return Self::NewEpoch("the trades stream ends without a readable trade".into());
        };
        if stored.last_trade < streamed.id {
            return Self::NewEpoch(format!(
                "the storage is behind Redis: its last trade is {}, the trades stream has {} (a wiped or different database)",
                stored.last_trade, streamed.id
            ));
        }
        // The same trade, not just the same id: what was executed and under which key. (Times
        // and decimals round-trip through JSON and SQL differently, so they are not compared.)
        let same = |trade: &Trade| {
            (
                &trade.symbol,
                trade.side,
                trade.quantity,
                trade.price,
                &trade.client_order_id,
            ) == (
                &streamed.symbol,
                streamed.side,
                streamed.quantity,
                streamed.price,
                &streamed.client_order_id,
            )
        };
        if !stored.trade_at_streamed.as_ref().is_some_and(same) {
            return Self::NewEpoch(format!(
                "the storage's trade {} is not the one in the trades stream (a different database)",
                streamed.id
            ));
        }
        let orders = state
            .channels
            .get(&Channel::Orders)
            .map(|tail| tail.orders.clone())
            .unwrap_or_default();
        let last_order = orders.keys().copied().max().unwrap_or(0);
        if stored.last_order < last_order {
            return Self::NewEpoch(format!(
                "the storage is behind Redis: its last order is {}, the orders stream has {last_order}",
                stored.last_order
            ));
        }
        let inherited = Inherited {
            last_trade: streamed.id,
            last_order,
            orders,
        };
        Self::Continue {
            epoch,
            channels: state.channels,
            inherited,
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;

    fn entry(seq: u64, epoch: u64, event: &Event) -> redis::streams::StreamId {
        let mut map = HashMap::new();
        map.insert(
            "epoch".to_owned(),
            redis::Value::BulkString(epoch.to_string().into_bytes()),
        );
        map.insert("ts".to_owned(), redis::Value::BulkString(b"1".to_vec()));
        map.insert(
            "event".to_owned(),
            redis::Value::BulkString(serde_json::to_vec(event).unwrap()),
        );
        redis::streams::StreamId {
            id: format!("{seq}-0"),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    fn hole(seq: u64) -> redis::streams::StreamId {
        let mut map = HashMap::new();
        map.insert("hole".to_owned(), redis::Value::BulkString(b"1".to_vec()));
        redis::streams::StreamId {
            id: format!("{seq}-0"),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    fn trade_event(id: u64) -> Event {
        Event::TradeExecuted(fixtures::trade(id, "BTCUSDT", "2", "1"))
    }

    fn state(epoch: Option<u64>, entries: Vec<redis::streams::StreamId>) -> StreamsState {
        let mut channels = HashMap::new();
        if let Some(tail) = tail_of(&Channel::Trades, epoch, entries.into_iter()) {
            channels.insert(Channel::Trades, tail);
        }
        StreamsState { epoch, channels }
    }

    fn stored(last_trade: u64) -> StoredMarks {
        StoredMarks {
            last_trade,
            trade_at_streamed: Some(fixtures::trade(3, "BTCUSDT", "2", "1")),
            last_order: 0,
        }
    }

    #[test]
    fn a_tail_keeps_the_contiguous_entries_of_the_epoch_up_to_the_last() {
        // TC0: contiguous entries of the epoch: all kept, the last trade noted
        let tail = tail_of(
            &Channel::Trades,
            Some(7),
            [1, 2, 3].map(|n| entry(n, 7, &trade_event(n))).into_iter(),
        )
        .unwrap();
        assert_eq!(tail.last_seq, 3);
        assert_eq!(
            tail.history.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(tail.last_trade.map(|t| t.id), Some(3));
        // TC1: a hole marker last: the seq goes past it, no history, the trade before still known
        let tail = tail_of(
            &Channel::Trades,
            Some(7),
            vec![entry(1, 7, &trade_event(1)), hole(2)].into_iter(),
        )
        .unwrap();
        assert_eq!((tail.last_seq, tail.history.len()), (2, 0));
        assert_eq!(tail.last_trade.map(|t| t.id), Some(1));
        // TC2: a jump restarts the history after it
        let tail = tail_of(
            &Channel::Trades,
            Some(7),
            vec![entry(1, 7, &trade_event(1)), entry(5, 7, &trade_event(2))].into_iter(),
        )
        .unwrap();
        assert_eq!(tail.history.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        // TC3: no entries, no tail
        assert_eq!(tail_of(&Channel::Trades, Some(7), std::iter::empty()), None);
    }

    #[test]
    fn the_epoch_continues_only_when_the_storage_holds_what_the_streams_say() {
        let trades = || [1, 2, 3].map(|n| entry(n, 7, &trade_event(n))).to_vec();
        // TC0: same trade at the stream's end, the storage ahead (committed, not published)
        let Continuity::Continue {
            epoch, inherited, ..
        } = Continuity::decide(state(Some(7), trades()), &stored(5))
        else {
            panic!("continues")
        };
        assert_eq!((epoch, inherited.last_trade), (7, 3));
        let why = |decided: Continuity| match decided {
            Continuity::NewEpoch(why) => why,
            Continuity::Continue { .. } => panic!("a new epoch expected"),
        };
        // TC1: no epoch key
        assert!(why(Continuity::decide(state(None, trades()), &stored(5))).contains("no epoch"));
        // TC2: storage behind
        assert!(
            why(Continuity::decide(state(Some(7), trades()), &stored(2))).contains("behind Redis")
        );
        // TC3: a different trade under the same id
        let other = StoredMarks {
            trade_at_streamed: Some(fixtures::trade(3, "ETHUSDT", "2", "1")),
            ..stored(3)
        };
        assert!(
            why(Continuity::decide(state(Some(7), trades()), &other))
                .contains("different database")
        );
        // TC4: no trades stream
        assert!(why(Continuity::decide(state(Some(7), vec![]), &stored(5))).contains("empty"));
        // TC5: the stream ends with another epoch than announced
        let mixed = vec![entry(1, 7, &trade_event(1)), entry(2, 8, &trade_event(2))];
        assert!(why(Continuity::decide(state(Some(7), mixed), &stored(5))).contains("epoch 8"));
    }
}
