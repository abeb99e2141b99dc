//! The event bus: publish/subscribe of stamped domain events, with a bounded replay history per
//! channel so a reconnecting client can get exactly what it missed.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use cryptobot_domain::{Channel, Event};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::InvalidSetting;
use crate::{Clock, ServiceError};

/// An event as published: stamped with its channel, its sequence number on that channel and the
/// time it was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Channel of the event (`ticker:BTCUSDT`, `trades`, ...).
    pub channel: Channel,
    /// Position on the channel: 1 for the first event, then increasing by one.
    pub seq: u64,
    /// Publication time in microseconds since the Unix epoch.
    pub ts_us: i64,
    /// The event itself.
    pub event: Event,
}

/// Publish/subscribe of domain events between the services and the gateway.
///
/// Subscribers get every envelope published after they subscribed, in publication order. A
/// subscriber that falls more than the bus capacity behind gets `RecvError::Lagged` and must decide
/// itself what a gap means for it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait EventBus: Send + Sync + Debug {
    /// Stamps and publishes an event; returns the envelope that subscribers receive.
    fn publish(&self, event: Event) -> Arc<Envelope>;

    /// Subscribes to every event published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>>;

    /// Identifies this bus instance (one server run): sequence numbers are unique per channel
    /// within an epoch only, so a client's `seq` from another epoch means nothing here.
    fn epoch(&self) -> u64;

    /// The `seq` of the last envelope published on `channel` (0 before the first).
    fn last_seq(&self, channel: &Channel) -> u64;

    /// Every retained envelope of `channel` with `seq > after_seq`, in order, or
    /// [`Replay::Gap`] when the history no longer reaches back that far (or `after_seq` is
    /// ahead of the channel). Never a partial list.
    fn replay(&self, channel: &Channel, after_seq: u64) -> Replay;

    /// The state of the link to an external broker, for buses that have one (`None`: in-process,
    /// always healthy).
    fn health(&self) -> Option<watch::Receiver<BrokerHealth>> {
        None
    }

    /// The epoch as it changes, for buses whose epoch can change while they run (a gateway node
    /// following an engine that restarted). Its value changes before any envelope of the new
    /// epoch is delivered, and [`EventBus::epoch`] already returns the new epoch by then. `None`:
    /// the epoch never changes (one bus, one run).
    fn epoch_changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// Whether this process may still commit and publish as the deployment's one engine.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] while the bus cannot confirm that this process is still the
    /// engine (its lease on the broker lapsed or was taken by another engine): nothing may be
    /// committed then, since another engine may be executing the same commands.
    fn check_fence(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    /// What an earlier engine run of this epoch published of the books, for an engine that
    /// continues that epoch (a takeover): its successor publishes what it committed beyond it
    /// before anything else. `None`: this run started the epoch.
    fn inherited(&self) -> Option<Inherited> {
        None
    }
}

/// The books as an earlier engine run of the same epoch published them (see
/// [`EventBus::inherited`]), read back from the broker's streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// Id of the last trade on the `trades` channel.
    pub last_trade: u64,
    /// Highest order id on the `orders` channel (of the entries retained).
    pub last_order: u64,
    /// Each retained order's last published status, by order id.
    pub orders: HashMap<u64, cryptobot_domain::OrderStatus>,
}

/// Connection state of a node to its event broker (a bus with one, see [`EventBus::health`]),
/// as watched by the gateway hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Not connected yet (startup).
    Connecting,
    /// Connected and in sync.
    Up,
    /// The broker is unreachable; the node retries with backoff.
    Down,
}

/// A subscription to the bus with the one lag policy every long-running subscriber uses: a
/// subscriber that falls behind skips what it missed and carries on with the oldest envelope
/// still retained.
///
/// [`Subscription::next`] logs each lag at `warn` with the subscriber's name and the number of
/// envelopes missed, and hands that number to the hook of [`Subscription::on_lag`] (the callers'
/// lag counters). The subscribers that use it tolerate a gap (tickers are latest-wins, signals
/// go stale, clients see a jump in `seq` and resume); one that cannot must take the receiver of
/// [`EventBus::subscribe`] and handle `RecvError::Lagged` itself.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Envelope>>,
    /// Names the subscriber in the lag warning.
    subscriber: &'static str,
    /// Told how many envelopes each lag skipped.
    on_lag: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("subscriber", &self.subscriber)
            .field("pending", &self.receiver.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Wraps `receiver` (from [`EventBus::subscribe`]) for the subscriber named `subscriber`.
    #[must_use]
    pub fn new(receiver: broadcast::Receiver<Arc<Envelope>>, subscriber: &'static str) -> Self {
        Self {
            receiver,
            subscriber,
            on_lag: None,
        }
    }

    /// Also calls `hook` with the number of envelopes each lag skipped (to count them).
    #[must_use]
    pub fn on_lag(mut self, hook: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.on_lag = Some(Box::new(hook));
        self
    }

    /// [`Subscription::next`], or `None` as soon as `shutdown` is cancelled (checked first).
    pub async fn next_until(&mut self, shutdown: &CancellationToken) -> Option<Arc<Envelope>> {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            envelope = self.next() => envelope,
        }
    }

    /// The next envelope, skipping (and reporting) any the subscriber lagged behind on; `None`
    /// once the bus is closed. Cancel-safe: an envelope is never lost to a `select!` that drops
    /// this future.
    pub async fn next(&mut self) -> Option<Arc<Envelope>> {
        loop {
            match self.receiver.recv().await {
                Ok(envelope) => return Some(envelope),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        subscriber = self.subscriber,
                        "subscriber lagged behind the event bus; missed envelopes skipped"
                    );
                    if let Some(hook) = &self.on_lag {
                        hook(missed);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Answer of [`EventBus::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Exactly the envelopes after the requested `seq`, in order (empty when nothing was missed).
    Complete(Vec<Arc<Envelope>>),
    /// The missed envelopes are no longer all retained: the caller must resynchronize.
    Gap {
        /// The `seq` of the last envelope published on the channel.
        latest: u64,
    },
}

/// Where events travel between the services and the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusBackend {
    /// In this process only.
    #[default]
    Memory,
    /// Through Redis Streams (`redis_url`, feature `redis`), so several nodes serve as one.
    Redis,
}

/// Settings of the event bus (`[bus]`); missing keys take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Events retained for slow subscribers of the in-process bus (1 to 16777216). Default 65536.
    pub capacity: usize,
    /// Events kept per channel for clients that resume after a reconnect (0 to 1048576).
    /// Default 1000.
    pub history_size: usize,
    /// Oldest event replayed to a resuming client, in seconds (1 to 86400). Default 300.
    pub history_max_age_secs: u64,
    /// `memory` or `redis`. Default `memory`.
    pub backend: BusBackend,
    /// Redis to use with `backend = "redis"`: `redis://host:port[/db]`.
    pub redis_url: String,
    /// Prefix of every Redis key (one per deployment). Default `cryptobot`.
    pub redis_prefix: String,
    /// Events the engine buffers while Redis is unreachable (1 to 16777216). Default 100000.
    pub publish_buffer: usize,
    /// How long a gateway node waits for the engine's answer to a forwarded command, in
    /// milliseconds (100 to 60000). Default 5000.
    pub command_timeout_ms: u64,
    /// Time-to-live of the engine's lease on `redis_prefix`, in milliseconds (1000 to 60000): a
    /// crashed engine's successor waits at most this long, and an engine paused longer may have
    /// been replaced, so it writes nothing until it renewed the lease. Default 10000.
    pub lease_ttl_ms: u64,
    /// An engine that finds the lease held waits for it as long as it takes (a hot standby)
    /// instead of exiting after 1.5 × `lease_ttl_ms`; it never takes over while it cannot reach
    /// Redis. Default false.
    pub standby: bool,
    /// Longest wait of a gateway node for any answer of Redis on its stream link, in
    /// milliseconds, the 250 ms an idle poll blocks included (500 to 60000): beyond it the link
    /// counts as down (readiness 503, `feed_stalled`) and is reconnected. It bounds how late a
    /// partition is noticed; below the link's worst round trip it reports false stalls. Default
    /// 750.
    pub read_timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            history_size: 1000,
            history_max_age_secs: 300,
            backend: BusBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_prefix: "cryptobot".to_owned(),
            publish_buffer: 100_000,
            command_timeout_ms: 5000,
            lease_ttl_ms: 10_000,
            standby: false,
            read_timeout_ms: 750,
        }
    }
}

impl BusConfig {
    /// Checks the ranges, the key prefix, and the Redis URL when the backend is Redis.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the key, e.g. `lease_ttl_ms`; without the `redis` feature the
    /// `redis` backend itself is refused.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let ranges: [(&'static str, u64, u64, u64); 7] = [
            ("capacity", count(self.capacity), 1, 1 << 24),
            ("history_size", count(self.history_size), 0, 1 << 20),
            ("history_max_age_secs", self.history_max_age_secs, 1, 86_400),
            ("publish_buffer", count(self.publish_buffer), 1, 1 << 24),
            ("command_timeout_ms", self.command_timeout_ms, 100, 60_000),
            ("lease_ttl_ms", self.lease_ttl_ms, 1_000, 60_000),
            ("read_timeout_ms", self.read_timeout_ms, 500, 60_000),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(InvalidSetting::new(
                    key,
                    format!("must be between {min} and {max}"),
                ));
            }
        }
        if self.redis_prefix.is_empty()
            || !self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(InvalidSetting::new(
                "redis_prefix",
                "must be non-empty ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if self.backend == BusBackend::Redis {
            #[cfg(feature = "redis")]
            if let Some(problem) = crate::scale::url_problem(&self.redis_url) {
                return Err(InvalidSetting::new("redis_url", problem));
            }
            #[cfg(not(feature = "redis"))]
            return Err(InvalidSetting::new(
                "backend",
                "\"redis\" needs the `redis` feature of cryptobot-services",
            ));
        }
        Ok(())
    }

    /// The bounds of the replay history: `history_size` envelopes, none older than
    /// `history_max_age_secs`.
    #[must_use]
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            max_age_us: i64::try_from(self.history_max_age_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
        }
    }
}

/// Bounds of the per-channel replay history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Envelopes retained per channel; 0 keeps none (every replay that misses something is a gap).
    pub size: usize,
    /// Envelopes older than this many microseconds are not replayed (and are pruned on publish).
    pub max_age_us: i64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            size: 1000,
            max_age_us: 300 * 1_000_000,
        }
    }
}

/// Sequence counter and history of one channel (also the Redis follower's mirror of one).
#[derive(Debug, Default)]
pub(crate) struct ChannelLog {
    /// The last `seq` published on the channel.
    pub(crate) seq: u64,
    /// Contiguous envelopes ending at `seq`, oldest first.
    pub(crate) history: VecDeque<Arc<Envelope>>,
}

impl ChannelLog {
    /// What a client that saw the channel up to `after_seq` missed, given the channel's log
    /// (`None`: nothing was ever published) and the oldest publication time still replayed.
    pub(crate) fn replay(log: Option<&Self>, after_seq: u64, oldest_kept: i64) -> Replay {
        let Some(log) = log else {
            // Nothing was ever published here: only "nothing seen" is consistent.
            return if after_seq == 0 {
                Replay::Complete(Vec::new())
            } else {
                Replay::Gap { latest: 0 }
            };
        };
        if after_seq == log.seq {
            return Replay::Complete(Vec::new());
        }
        if after_seq > log.seq {
            return Replay::Gap { latest: log.seq };
        }
        // The first missed envelope (seq after_seq + 1) must still be retained and young enough;
        // the history is contiguous, so then every later one is too.
        let Some(first) = log.history.front() else {
            return Replay::Gap { latest: log.seq };
        };
        if first.seq > after_seq + 1 {
            return Replay::Gap { latest: log.seq };
        }
        let skip = usize::try_from(after_seq + 1 - first.seq).unwrap_or(usize::MAX);
        let missed: Vec<Arc<Envelope>> = log.history.iter().skip(skip).cloned().collect();
        match missed.first() {
            Some(first) if first.seq == after_seq + 1 && first.ts_us >= oldest_kept => {
                Replay::Complete(missed)
            }
            _ => Replay::Gap { latest: log.seq },
        }
    }
}

/// The in-process event bus: one tokio broadcast channel, with sequence numbers and a bounded
/// history counted per channel under a short lock (never held across an await).
///
/// The history holds the same `Arc<Envelope>` the subscribers get, so publishing copies no event;
/// memory is bounded by `history.size` envelopes per channel (channels are bounded by the symbols).
#[derive(Debug)]
pub struct InMemoryBus {
    sender: broadcast::Sender<Arc<Envelope>>,
    channels: Mutex<HashMap<Channel, ChannelLog>>,
    clock: Arc<dyn Clock>,
    limits: HistoryLimits,
    epoch: u64,
}

impl InMemoryBus {
    /// Default number of envelopes retained for slow subscribers.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// Creates a bus keeping up to `capacity` envelopes for slow subscribers, with the default
    /// [`HistoryLimits`]; its epoch is the creation time in microseconds.
    #[must_use]
    pub fn new(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        Self::with_history(capacity, HistoryLimits::default(), clock)
    }

    /// Like [`InMemoryBus::new`] with explicit history bounds.
    #[must_use]
    pub fn with_history(capacity: usize, limits: HistoryLimits, clock: Arc<dyn Clock>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        // The start time in µs differs between runs of a server and stays below 2^53, so
        // JavaScript clients hold it exactly.
        let epoch = u64::try_from(clock.now_us()).unwrap_or(1).max(1);
        Self {
            sender,
            channels: Mutex::new(HashMap::new()),
            clock,
            limits,
            epoch,
        }
    }

    /// A bus that continues `epoch`: each channel of `tails` goes on after its last `seq`, with
    /// the envelopes given (oldest first, contiguous up to that `seq`; may be empty) as its
    /// history, so resumes from before the continuation are exact as far as they reach.
    #[must_use]
    pub fn continuing(
        capacity: usize,
        limits: HistoryLimits,
        clock: Arc<dyn Clock>,
        epoch: u64,
        tails: impl IntoIterator<Item = (Channel, u64, Vec<Arc<Envelope>>)>,
    ) -> Self {
        let bus = Self::with_history(capacity, limits, clock).with_epoch(epoch);
        {
            let mut channels = bus.channels.lock().unwrap_or_else(PoisonError::into_inner);
            for (channel, seq, history) in tails {
                let contiguous = history.last().is_some_and(|last| last.seq == seq)
                    && history
                        .windows(2)
                        .all(|pair| pair[1].seq == pair[0].seq + 1);
                let mut history: VecDeque<Arc<Envelope>> = if contiguous {
                    history.into_iter().collect()
                } else {
                    VecDeque::new()
                };
                while history.len() > limits.size {
                    history.pop_front();
                }
                channels.insert(channel, ChannelLog { seq, history });
            }
        }
        bus
    }

    /// Replaces the epoch (tests, or a caller that derives epochs itself).
    #[must_use]
    pub const fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The history bounds in use.
    #[must_use]
    pub const fn limits(&self) -> HistoryLimits {
        self.limits
    }
}

impl EventBus for InMemoryBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        let channel = event.channel();
        // The lock also orders the send, so subscribers see each channel's seq strictly increasing.
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let log = channels.entry(channel.clone()).or_default();
        log.seq += 1;
        let ts_us = self.clock.now_us();
        let envelope = Arc::new(Envelope {
            channel,
            seq: log.seq,
            ts_us,
            event,
        });
        if self.limits.size > 0 {
            if log.history.len() >= self.limits.size {
                log.history.pop_front();
            }
            log.history.push_back(Arc::clone(&envelope));
        }
        let oldest_kept = ts_us.saturating_sub(self.limits.max_age_us);
        while log.history.front().is_some_and(|e| e.ts_us < oldest_kept) {
            log.history.pop_front();
        }
        // An error only means nobody is subscribed right now, which is fine for a broadcast.
        let _ = self.sender.send(Arc::clone(&envelope));
        envelope
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn last_seq(&self, channel: &Channel) -> u64 {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel)
            .map_or(0, |log| log.seq)
    }

    fn replay(&self, channel: &Channel, after_seq: u64) -> Replay {
        let oldest_kept = self.clock.now_us().saturating_sub(self.limits.max_age_us);
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        ChannelLog::replay(channels.get(channel), after_seq, oldest_kept)
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use chrono::TimeDelta;

    use super::*;
    use crate::{ManualClock, SystemClock};

    #[test]
    fn bus_config_checks_name_the_key() {
        let ok = BusConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.history_limits(), HistoryLimits::default());
        let cases = [
            // TC0: each range, just outside it
            (
                BusConfig {
                    capacity: 0,
                    ..ok.clone()
                },
                "capacity",
            ),
            (
                BusConfig {
                    history_size: (1 << 20) + 1,
                    ..ok.clone()
                },
                "history_size",
            ),
            (
                BusConfig {
                    history_max_age_secs: 0,
                    ..ok.clone()
                },
                "history_max_age_secs",
            ),
            (
                BusConfig {
                    publish_buffer: 0,
                    ..ok.clone()
                },
                "publish_buffer",
            ),
            (
                BusConfig {
                    command_timeout_ms: 99,
                    ..ok.clone()
                },
                "command_timeout_ms",
            ),
            (
                BusConfig {
                    lease_ttl_ms: 60_001,
                    ..ok.clone()
                },
                "lease_ttl_ms",
            ),
            (
                BusConfig {
                    read_timeout_ms: 499,
                    ..ok.clone()
                },
                "read_timeout_ms",
            ),
            // TC1: a prefix that is empty or has a blank
            (
                BusConfig {
                    redis_prefix: String::new(),
                    ..ok.clone()
                },
                "redis_prefix",
            ),
            (
                BusConfig {
                    redis_prefix: "a b".into(),
                    ..ok.clone()
                },
                "redis_prefix",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().map_err(|e| e.key), Err(key), "{config:?}");
        }
        // TC2: the Redis URL matters only with the Redis backend
        let memory = BusConfig {
            redis_url: "rediss://x".into(),
            ..ok
        };
        assert_eq!(memory.validate(), Ok(()));
        let redis = BusConfig {
            backend: BusBackend::Redis,
            ..memory
        };
        let expected = if cfg!(feature = "redis") {
            "redis_url"
        } else {
            "backend"
        };
        assert_eq!(redis.validate().map_err(|e| e.key), Err(expected));
        // TC3: the history bounds in microseconds
        let day = BusConfig {
            history_size: 7,
            history_max_age_secs: 86_400,
            ..BusConfig::default()
        };
        assert_eq!(
            day.history_limits(),
            HistoryLimits {
                size: 7,
                max_age_us: 86_400_000_000
            }
        );
    }

    #[tokio::test]
    async fn numbers_events_per_channel_and_delivers_in_order() {
        let bus = InMemoryBus::new(16, Arc::new(SystemClock));
        let mut rx = bus.subscribe();
        bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        bus.publish(Event::Ticker(fixtures::ticker("ETHUSDT", "1")));
        bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "2")));
        bus.publish(Event::TradeExecuted(fixtures::trade(
            1, "BTCUSDT", "2", "1",
        )));
        let got: Vec<(String, u64)> = (0..4)
            .map(|_| rx.try_recv().unwrap())
            .map(|e| (e.channel.to_string(), e.seq))
            .collect();
        assert_eq!(
            got,
            [
                ("ticker:BTCUSDT".to_owned(), 1),
                ("ticker:ETHUSDT".to_owned(), 1),
                ("ticker:BTCUSDT".to_owned(), 2),
                ("trades".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn publishing_without_subscribers_still_counts() {
        let bus = InMemoryBus::new(4, Arc::new(SystemClock));
        assert_eq!(
            bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")))
                .seq,
            1
        );
        assert_eq!(
            bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")))
                .seq,
            2
        );
    }

    fn seqs(replay: &Replay) -> Option<Vec<u64>> {
        match replay {
            Replay::Complete(envelopes) => Some(envelopes.iter().map(|e| e.seq).collect()),
            Replay::Gap { .. } => None,
        }
    }

    fn manual_bus(size: usize, max_age_secs: i64) -> (InMemoryBus, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(fixtures::instant()));
        let limits = HistoryLimits {
            size,
            max_age_us: max_age_secs * 1_000_000,
        };
        let bus = InMemoryBus::with_history(16, limits, Arc::clone(&clock) as Arc<dyn Clock>);
        (bus, clock)
    }

    fn tick(bus: &InMemoryBus, symbol: &str) -> u64 {
        bus.publish(Event::Ticker(fixtures::ticker(symbol, "1")))
            .seq
    }

    #[test]
    fn replay_edge_cases() {
        let (bus, _) = manual_bus(3, 300);
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        // TC0: nothing published: only "nothing seen" is consistent
        assert_eq!(seqs(&bus.replay(&btc, 0)), Some(vec![]));
        assert_eq!(bus.replay(&btc, 1), Replay::Gap { latest: 0 });
        for _ in 0..5 {
            tick(&bus, "BTCUSDT");
        }
        tick(&bus, "ETHUSDT");
        // TC1: up to date
        assert_eq!(seqs(&bus.replay(&btc, 5)), Some(vec![]));
        // TC2: within the history, per channel
        assert_eq!(seqs(&bus.replay(&btc, 2)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(&bus.replay(&btc, 4)), Some(vec![5]));
        // TC3: beyond the history (size 3 keeps 3..=5): a gap, never a partial list
        assert_eq!(bus.replay(&btc, 1), Replay::Gap { latest: 5 });
        assert_eq!(bus.replay(&btc, 0), Replay::Gap { latest: 5 });
        // TC4: ahead of the channel (a seq from another run)
        assert_eq!(bus.replay(&btc, 9), Replay::Gap { latest: 5 });
        // TC5: other channels are independent
        let eth = Channel::Ticker(fixtures::symbol("ETHUSDT"));
        assert_eq!(seqs(&bus.replay(&eth, 0)), Some(vec![1]));
        assert_eq!(bus.last_seq(&btc), 5);
        assert_eq!(bus.last_seq(&Channel::Trades), 0);
    }

    #[test]
    fn history_is_bounded_by_size() {
        let (bus, _) = manual_bus(4, 300);
        for _ in 0..1000 {
            tick(&bus, "BTCUSDT");
        }
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        assert_eq!(
            seqs(&bus.replay(&btc, 996)),
            Some(vec![997, 998, 999, 1000])
        );
        assert_eq!(bus.replay(&btc, 995), Replay::Gap { latest: 1000 });
        let channels = bus.channels.lock().unwrap();
        assert_eq!(channels[&btc].history.len(), 4);
    }

    #[test]
    fn history_is_bounded_by_age() {
        let (bus, clock) = manual_bus(100, 10);
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        tick(&bus, "BTCUSDT");
        clock.advance(TimeDelta::seconds(6));
        tick(&bus, "BTCUSDT");
        // TC0: both young enough
        assert_eq!(seqs(&bus.replay(&btc, 0)), Some(vec![1, 2]));
        // TC1: the first is now too old to replay, even before a publish prunes it
        clock.advance(TimeDelta::seconds(5));
        assert_eq!(bus.replay(&btc, 0), Replay::Gap { latest: 2 });
        assert_eq!(seqs(&bus.replay(&btc, 1)), Some(vec![2]));
        // TC2: a publish prunes what is too old
        clock.advance(TimeDelta::seconds(20));
        tick(&bus, "BTCUSDT");
        assert_eq!(bus.replay(&btc, 1), Replay::Gap { latest: 3 });
        assert_eq!(seqs(&bus.replay(&btc, 2)), Some(vec![3]));
        assert_eq!(bus.channels.lock().unwrap()[&btc].history.len(), 1);
    }

    #[test]
    fn zero_history_replays_only_nothing_missed() {
        let (bus, _) = manual_bus(0, 300);
        tick(&bus, "BTCUSDT");
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        assert_eq!(seqs(&bus.replay(&btc, 1)), Some(vec![]));
        assert_eq!(bus.replay(&btc, 0), Replay::Gap { latest: 1 });
    }

    #[test]
    fn history_shares_the_published_envelope_and_epochs_differ_by_clock() {
        let (bus, clock) = manual_bus(8, 300);
        let published = bus.publish(Event::TradeExecuted(fixtures::trade(
            1, "BTCUSDT", "2", "1",
        )));
        let Replay::Complete(replayed) = bus.replay(&Channel::Trades, 0) else {
            panic!("history expected")
        };
        assert!(
            Arc::ptr_eq(&published, &replayed[0]),
            "no copy of the event"
        );
        clock.advance(TimeDelta::seconds(1));
        let later = InMemoryBus::new(4, Arc::clone(&clock) as Arc<dyn Clock>);
        assert_ne!(bus.epoch(), later.epoch());
        assert_eq!(later.with_epoch(7).epoch(), 7);
    }

    #[tokio::test]
    async fn subscription_skips_a_lag_reports_it_and_ends_when_the_bus_closes() {
        let bus = InMemoryBus::new(2, Arc::new(SystemClock));
        let lagged = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&lagged);
        let mut events = Subscription::new(bus.subscribe(), "test")
            .on_lag(move |missed| seen.lock().unwrap().push(missed));
        for _ in 0..5 {
            bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        }
        // TC0: 3 of 5 no longer retained: skipped and reported once, then the oldest kept
        assert_eq!(events.next().await.map(|e| e.seq), Some(4));
        assert_eq!(*lagged.lock().unwrap(), [3]);
        assert_eq!(events.next().await.map(|e| e.seq), Some(5));
        // TC1: a cancelled token wins over a pending envelope, which stays for the next call
        bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert_eq!(events.next_until(&shutdown).await, None);
        let open = CancellationToken::new();
        assert_eq!(events.next_until(&open).await.map(|e| e.seq), Some(6));
        // TC2: the bus is gone: no more envelopes
        drop(bus);
        assert_eq!(events.next().await, None);
        assert_eq!(*lagged.lock().unwrap(), [3]);
    }

    #[tokio::test]
    async fn slow_subscriber_sees_lag() {
        let bus = InMemoryBus::new(2, Arc::new(SystemClock));
        let mut rx = bus.subscribe();
        for _ in 0..5 {
            bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(rx.recv().await.unwrap().seq, 4);
    }
}
