//! Scale-out through Redis: one engine node publishes every envelope to Redis Streams, any number
//! of gateway nodes follow them, and gateway nodes forward trading commands to the engine.
//!
//! Keys (all under `bus.redis_prefix`): `{prefix}:epoch` (the engine's epoch),
//! `{prefix}:engine` (the running engine's lease: its run token), `{prefix}:engine:alive` (its
//! epoch, present while it renews the lease), `{prefix}:stream:{channel}` (one stream per channel, entry ID `<seq>-0`, fields `epoch`, `ts`,
//! `event`), `{prefix}:rpc:requests` (list of forwarded commands) and `{prefix}:rpc:reply:{node}`
//! (one reply list per gateway node).

/// Whether an engine that took the lease continues the epoch in Redis or starts a new one.
pub mod continuity;
/// The gateway side: a bus that follows the engine's streams.
pub mod follower;
/// The engine's lease on its key prefix.
pub mod lease;
/// The Redis connection helper with reconnect backoff.
mod link;
/// Tests that need a real Redis: skipped without one, failed under `CI=true`.
#[cfg(test)]
mod needs_redis;
/// The engine side: local bus plus an ordered, bounded writer to Redis Streams.
pub mod publisher;
/// Forwarded commands: the engine's server and the gateway's proxies.
pub mod remote;

use std::time::Duration;

use cryptobot_domain::{Channel, Interval, Symbol};

use crate::{BrokerHealth, BusConfig};
#[cfg(test)]
use needs_redis::redis_url_or_skip;

pub use continuity::{ChannelTail, Continuity, StoredMarks, StreamsState, read_streams};
pub use follower::{RedisFollowerBus, StreamReader};
pub use lease::{
    ENGINE_LEASE, EngineLease, LeaseKeeper, LeaseOutcome, acquire_engine_lease,
    wait_for_engine_lease,
};
pub use publisher::{RedisPublishingBus, StreamWriter};
pub use remote::{CommandServer, RemoteMarket, RemoteTrading};

/// Tells a node's watchers (the gateway hub) about a change of its broker state, and keeps the
/// `connected` gauge in step; watchers are woken only on a real change.
fn report_health(
    sender: &tokio::sync::watch::Sender<BrokerHealth>,
    metrics: &BrokerMetrics,
    health: BrokerHealth,
) {
    sender.send_if_modified(|current| {
        let changed = *current != health;
        *current = health;
        changed
    });
    metrics.connected.store(
        u64::from(health == BrokerHealth::Up),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Settings shared by every Redis piece of a node.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key (several deployments or test runs can share one Redis).
    pub prefix: String,
    /// Envelopes kept per channel stream (`XADD MAXLEN ~`).
    pub stream_len: usize,
    /// Envelopes the engine buffers while Redis is unreachable; beyond it the oldest are dropped
    /// and reported (followers then answer resumes across the hole with `recovered: false`).
    pub publish_buffer: usize,
    /// How long a gateway waits for the engine's answer to a forwarded command.
    pub command_timeout: Duration,
    /// Time-to-live of the engine's lease (`bus.lease_ttl_ms`).
    pub lease_ttl: Duration,
    /// Longest wait of a gateway's stream link for an answer of Redis (`bus.read_timeout_ms`).
    pub read_timeout: Duration,
    /// Channels the engine publishes (tickers of the configured symbols and the fixed channels).
    pub channels: Vec<Channel>,
}

impl BusConfig {
    /// The Redis settings of `[bus]`, with the channels the engine publishes: tickers of
    /// `symbols`, then `trades`, `portfolio`, `signals`, `alerts`, `orders`, `bot`, then the candles of
    /// every symbol and interval.
    #[must_use]
    pub fn redis_settings(&self, symbols: &[Symbol]) -> RedisSettings {
        let mut channels: Vec<Channel> = symbols.iter().cloned().map(Channel::Ticker).collect();
        channels.extend([
            Channel::Trades,
            Channel::Portfolio,
            Channel::Signals,
            Channel::Alerts,
            Channel::Orders,
            Channel::Bot,
        ]);
        for symbol in symbols {
            for interval in Interval::ALL {
                channels.push(Channel::Candles(symbol.clone(), interval));
            }
        }
        RedisSettings {
            url: self.redis_url.clone(),
            prefix: self.redis_prefix.clone(),
            stream_len: self.history_size.max(1),
            publish_buffer: self.publish_buffer,
            command_timeout: Duration::from_millis(self.command_timeout_ms),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            channels,
        }
    }
}

impl RedisSettings {
    pub(crate) fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    pub(crate) fn lease_key(&self) -> String {
        format!("{}:engine", self.prefix)
    }

    /// Present while the engine renews its lease; gateways report the engine down without it.
    pub(crate) fn alive_key(&self) -> String {
        format!("{}:engine:alive", self.prefix)
    }

    pub(crate) fn stream_key(&self, channel: &Channel) -> String {
        format!("{}:stream:{channel}", self.prefix)
    }

    pub(crate) fn requests_key(&self) -> String {
        format!("{}:rpc:requests", self.prefix)
    }

    pub(crate) fn reply_key(&self, node: &str) -> String {
        format!("{}:rpc:reply:{node}", self.prefix)
    }
}

/// Counters of one node's broker link, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// 1 while connected, 0 otherwise.
    pub connected: std::sync::atomic::AtomicU64,
    /// Envelopes waiting to be written to Redis (engine).
    pub publish_backlog: std::sync::atomic::AtomicU64,
    /// Envelopes dropped because the publish buffer was full (engine).
    pub publish_dropped: std::sync::atomic::AtomicU64,
    /// Envelopes written to Redis (engine) or read from it (gateway).
    pub envelopes: std::sync::atomic::AtomicU64,
    /// Successful reconnections after a failure.
    pub reconnects: std::sync::atomic::AtomicU64,
    /// Holes in a followed stream (a `seq` jump): resumes across them answer `recovered: false`.
    pub gaps: std::sync::atomic::AtomicU64,
    /// Commands forwarded to the engine (gateway) or served for a gateway (engine).
    pub commands: std::sync::atomic::AtomicU64,
    /// Forwarded commands that got no answer in time.
    pub command_timeouts: std::sync::atomic::AtomicU64,
    /// 1 while the engine renews its lease, as last seen by this gateway (0 while Redis is
    /// unreachable: unknown). Health probes read it instead of asking the engine.
    pub engine_alive: std::sync::atomic::AtomicU64,
    /// Event time (`ts_us`) of the last entry a gateway applied; 0 before the first.
    pub last_applied_ts_us: std::sync::atomic::AtomicI64,
    /// Entries in the followed streams after the last applied one, summed over the channels
    /// (gateway; measured at most once a second by the follower, never by the scrape).
    pub entries_behind: std::sync::atomic::AtomicU64,
}

/// Which end of the Redis link a node holds; each exports only the broker series it owns, so a
/// sum over nodes counts every series once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// The engine (or an `all` node with Redis): publishes events and serves commands.
    Publisher,
    /// A gateway: follows the streams and forwards commands.
    Follower,
}

impl BrokerMetrics {
    /// Records the event time (`ts_us`) of the entry a follower just applied.
    pub fn applied(&self, ts_us: i64) {
        self.last_applied_ts_us
            .store(ts_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// Seconds since the event time of the last applied entry (follower); `None` before one.
    #[must_use]
    pub fn follow_lag_seconds(&self) -> Option<f64> {
        let ts_us = self
            .last_applied_ts_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if ts_us == 0 {
            return None;
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
            });
        // Microseconds of an age stay far below 2^53; clocks a little apart give 0, not < 0.
        #[allow(clippy::cast_precision_loss)]
        Some(now_us.saturating_sub(ts_us).max(0) as f64 / 1e6)
    }

    /// The series `end` owns, read from these atomics at scrape time.
    #[must_use]
    pub fn collector(self: &std::sync::Arc<Self>, end: LinkEnd) -> crate::metrics::ReadAtScrape {
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        use std::sync::atomic::Ordering::Relaxed;
        let publisher = end == LinkEnd::Publisher;
        type Field = fn(&BrokerMetrics) -> &AtomicU64;
        let rows: [(&str, bool, &str, Field, bool); 10] = [
            (
                "cryptobot_broker_connected",
                false,
                "1 while this node is connected to Redis.",
                |m| &m.connected,
                true,
            ),
            (
                "cryptobot_broker_publish_backlog",
                false,
                "Envelopes waiting to be written to Redis (engine).",
                |m| &m.publish_backlog,
                publisher,
            ),
            (
                "cryptobot_broker_publish_dropped_total",
                true,
                "Envelopes dropped because the publish buffer was full (engine).",
                |m| &m.publish_dropped,
                publisher,
            ),
            (
                "cryptobot_broker_envelopes_total",
                true,
                "Envelopes written to Redis (engine) or read from it (gateway).",
                |m| &m.envelopes,
                true,
            ),
            (
                "cryptobot_broker_reconnects_total",
                true,
                "Connections to Redis re-established after a failure.",
                |m| &m.reconnects,
                true,
            ),
            (
                "cryptobot_broker_stream_gaps_total",
                true,
                "Holes found in a followed Redis stream.",
                |m| &m.gaps,
                !publisher,
            ),
            (
                "cryptobot_broker_commands_total",
                true,
                "Commands forwarded to the engine (gateway) or served for a gateway (engine).",
                |m| &m.commands,
                true,
            ),
            (
                "cryptobot_broker_command_timeouts_total",
                true,
                "Forwarded commands that got no answer in time.",
                |m| &m.command_timeouts,
                !publisher,
            ),
            (
                "cryptobot_broker_engine_alive",
                false,
                "1 while the engine renews its lease, as last seen by this node.",
                |m| &m.engine_alive,
                !publisher,
            ),
            (
                "cryptobot_broker_entries_behind",
                false,
                "Stream entries in Redis after the last one this gateway applied (read at most once a second).",
                |m| &m.entries_behind,
                !publisher,
            ),
        ];
        let mut collector = crate::metrics::ReadAtScrape::new();
        for (name, counter, help, field, owned) in rows {
            if !owned {
                continue;
            }
            let metrics = Arc::clone(self);
            // Counts stay far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            let read = move || Some(field(&metrics).load(Relaxed) as f64);
            collector = if counter {
                collector.counter(name, help, read)
            } else {
                collector.gauge(name, help, read)
            };
        }
        if !publisher {
            let metrics = Arc::clone(self);
            collector = collector.gauge(
                "cryptobot_broker_follow_lag_seconds",
                "Seconds since the event time of the last stream entry this gateway applied.",
                move || metrics.follow_lag_seconds(),
            );
        }
        collector
    }
}

/// Why a Redis URL cannot be used (TLS is not built in), if it cannot.
#[must_use]
pub fn url_problem(url: &str) -> Option<String> {
    if !url.starts_with("redis://") {
        return Some("must start with redis:// (rediss:// is not supported)".into());
    }
    redis::Client::open(url)
        .err()
        .map(|err| format!("cannot be parsed: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_end_exports_only_the_series_it_owns() {
        let metrics = std::sync::Arc::new(BrokerMetrics::default());
        let render = |end| {
            let registry = prometheus::Registry::new();
            metrics.collector(end).register(&registry).unwrap();
            crate::metrics::encode(&registry)
        };
        let publisher = render(LinkEnd::Publisher);
        let follower = render(LinkEnd::Follower);
        assert!(publisher.contains("# HELP cryptobot_broker_publish_backlog "));
        assert!(publisher.contains("\ncryptobot_broker_publish_backlog 0\n"));
        assert!(
            !publisher.contains("cryptobot_broker_engine_alive"),
            "{publisher}"
        );
        assert!(!publisher.contains("cryptobot_broker_stream_gaps_total"));
        assert!(!publisher.contains("cryptobot_broker_entries_behind"));
        assert!(
            follower.contains("\ncryptobot_broker_engine_alive 0\n"),
            "{follower}"
        );
        assert!(follower.contains("\ncryptobot_broker_entries_behind 0\n"));
        assert!(
            !follower.contains("cryptobot_broker_publish_"),
            "{follower}"
        );
        // TC: the lag is absent before the first applied entry, then an age in seconds
        assert!(!follower.contains("cryptobot_broker_follow_lag_seconds"));
        let ten_seconds_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
            - 10_000_000;
        metrics.applied(ten_seconds_ago);
        let lag = metrics.follow_lag_seconds().unwrap();
        assert!((10.0..60.0).contains(&lag), "{lag}");
        assert!(
            render(LinkEnd::Follower)
                .contains("# TYPE cryptobot_broker_follow_lag_seconds gauge\n")
        );
        for both in [
            "cryptobot_broker_connected 0",
            "cryptobot_broker_commands_total 0",
        ] {
            assert!(
                publisher.contains(both) && follower.contains(both),
                "{both}"
            );
        }
    }
}
