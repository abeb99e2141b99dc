use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cryptobot_domain::{Channel, Event};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{BrokerMetrics, RedisSettings, link, report_health};
use crate::bus::ChannelLog;
use crate::{BrokerHealth, Clock, Envelope, EventBus, HistoryLimits, Replay};

/// How long one `XREAD` waits for new entries (also how fast shutdown, a new epoch and the
/// engine's liveness are seen). `bus.read_timeout_ms` (at least 500) must exceed it.
const BLOCK_MS: u64 = 250;
/// Entries read per stream per round trip.
const READ_COUNT: usize = 512;

/// A gateway node's bus: follows the engine's Redis Streams and serves the same envelopes, with
/// the same `seq` and epoch, to the local hub and to resumes (from a local mirror of the history).
///
/// It never publishes: [`EventBus::publish`] on a follower is a programming error, logged and
/// returned unsequenced (`seq` 0) without reaching anyone.
#[derive(Debug)]
pub struct RedisFollowerBus {
    sender: broadcast::Sender<Arc<Envelope>>,
    state: Mutex<Mirror>,
    limits: HistoryLimits,
    clock: Arc<dyn Clock>,
    health: watch::Sender<BrokerHealth>,
    /// The engine's epoch as it changes; sent before any envelope of a new epoch.
    epochs: watch::Sender<u64>,
    metrics: Arc<BrokerMetrics>,
    /// When `cryptobot_broker_entries_behind` was last measured.
    behind_measured: Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, Default)]
struct Mirror {
    /// The engine's epoch; 0 until the first connection.
    epoch: u64,
    /// Per channel: the last `seq` and the contiguous history ending at it (cleared at a hole).
    channels: HashMap<Channel, ChannelLog>,
}

impl RedisFollowerBus {
    /// Creates an empty mirror; spawn its [`RedisFollowerBus::reader`] to fill it.
    #[must_use]
    pub fn new(
        capacity: usize,
        limits: HistoryLimits,
        clock: Arc<dyn Clock>,
        metrics: Arc<BrokerMetrics>,
    ) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
            state: Mutex::new(Mirror::default()),
            limits,
            clock,
            health: watch::channel(BrokerHealth::Connecting).0,
            epochs: watch::channel(0).0,
            metrics,
            behind_measured: Mutex::new(None),
        }
    }

    /// The task that fills this mirror from Redis until `shutdown` (see [`StreamReader::run`]).
    #[must_use]
    pub fn reader(
        self: &Arc<Self>,
        settings: RedisSettings,
        shutdown: CancellationToken,
    ) -> StreamReader {
        StreamReader {
            bus: Arc::clone(self),
            settings,
            shutdown,
        }
    }

    fn set_health(&self, health: BrokerHealth) {
        if health != BrokerHealth::Up {
            // Unknown while Redis cannot be read.
            self.metrics.engine_alive.store(0, Relaxed);
        }
        report_health(&self.health, &self.metrics, health);
    }

    /// One round: checks the epoch and the engine's liveness, then reads what follows the last
    /// entry of every channel. The node counts as up once an engine has announced its epoch, and
    /// says so before it delivers what it reads.
    async fn poll(
        &self,
        conn: &mut MultiplexedConnection,
        settings: &RedisSettings,
        ever_up: &mut bool,
    ) -> Result<(), String> {
        let (epoch, alive): (Option<u64>, Option<u64>) = redis::pipe()
            .get(settings.epoch_key())
            .get(settings.alive_key())
            .query_async(conn)
            .await
            .map_err(|err| err.to_string())?;
        // The mark holds the epoch the lease holder publishes: only an engine of the epoch this
        // node follows counts (a successor that took the lease but has not decided its epoch yet
        // writes no mark).
        let alive = epoch.is_some() && alive == epoch;
        self.metrics.engine_alive.store(u64::from(alive), Relaxed);
        let Some(epoch) = epoch else {
            // The engine has not (re)announced itself yet.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        };
        self.adopt_epoch(epoch);
        if *self.health.borrow() != BrokerHealth::Up {
            if *ever_up {
                self.metrics.reconnects.fetch_add(1, Relaxed);
            }
            *ever_up = true;
            self.set_health(BrokerHealth::Up);
            tracing::info!("redis: gateway following the engine");
        }
        let (keys, ids): (Vec<String>, Vec<String>) = {
            let mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            settings
                .channels
                .iter()
                .map(|channel| {
                    let seq = mirror.channels.get(channel).map_or(0, |log| log.seq);
                    (settings.stream_key(channel), format!("{seq}-0"))
                })
                .unzip()
        };
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids)
            .query_async(conn)
            .await
            .map_err(|err| err.to_string())?;
        self.read_entries(settings, reply);
        self.measure_behind(conn, settings, &keys).await;
        Ok(())
    }

    /// Applies what one `XREAD` returned.
    fn read_entries(&self, settings: &RedisSettings, reply: Option<StreamReadReply>) {
        let Some(reply) = reply else {
            return;
        };
        for stream in reply.keys {
            let Some(channel) = settings
                .channels
                .iter()
                .find(|channel| settings.stream_key(channel) == stream.key)
            else {
                continue;
            };
            for entry in stream.ids {
                if entry.map.contains_key("hole") {
                    tracing::warn!(%channel, id = entry.id, "the engine lost events while Redis was away");
                    self.skip(channel, &entry.id);
                    continue;
                }
                match decode(channel, &entry) {
                    Ok((entry_epoch, envelope)) => self.apply(entry_epoch, envelope),
                    Err(err) => {
                        tracing::error!(%err, id = entry.id, "redis: unreadable stream entry skipped (a hole)");
                        self.skip(channel, &entry.id);
                    }
                }
            }
        }
    }

    /// At most once a second, reads the last entry id of every followed stream (`<seq>-0`) and
    /// stores how many entries follow the last applied ones (`cryptobot_broker_entries_behind`).
    /// Runs in the reader task, so a scrape never waits on Redis; a failed read leaves the last
    /// value (the link's own errors show on the next poll).
    async fn measure_behind(
        &self,
        conn: &mut MultiplexedConnection,
        settings: &RedisSettings,
        keys: &[String],
    ) {
        {
            let mut measured = self
                .behind_measured
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if measured.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *measured = Some(std::time::Instant::now());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let last: Vec<redis::streams::StreamRangeReply> =
            match tokio::time::timeout(settings.read_timeout, pipe.query_async(conn)).await {
                Ok(Ok(last)) => last,
                Ok(Err(err)) => return tracing::debug!(%err, "redis: entries behind not measured"),
                Err(_) => return,
            };
        let mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let behind: u64 = settings
            .channels
            .iter()
            .zip(&last)
            .filter_map(|(channel, range)| {
                let newest = range
                    .ids
                    .first()?
                    .id
                    .split('-')
                    .next()?
                    .parse::<u64>()
                    .ok()?;
                let applied = mirror.channels.get(channel).map_or(0, |log| log.seq);
                Some(newest.saturating_sub(applied))
            })
            .sum();
        self.metrics.entries_behind.store(behind, Relaxed);
    }

    /// A new engine run: everything mirrored belongs to the old epoch and is forgotten, and the
    /// watchers of [`EventBus::epoch_changes`] are told before anything of the new run is
    /// delivered (envelopes are only delivered by this task, after this returns).
    fn adopt_epoch(&self, epoch: u64) {
        let mut mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if mirror.epoch != epoch {
            if mirror.epoch != 0 {
                tracing::warn!(
                    old = mirror.epoch,
                    new = epoch,
                    "engine restarted: new epoch"
                );
            }
            mirror.epoch = epoch;
            mirror.channels.clear();
            drop(mirror);
            self.epochs.send_replace(epoch);
        }
    }

    /// Moves past an entry that cannot be read, as a hole: resumes across it answer
    /// `recovered: false` instead of reading it again forever.
    fn skip(&self, channel: &Channel, id: &str) {
        let Some(seq) = id.split('-').next().and_then(|seq| seq.parse::<u64>().ok()) else {
            return;
        };
        let mut mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let log = mirror.channels.entry(channel.clone()).or_default();
        if seq > log.seq {
            log.seq = seq;
            log.history.clear();
            self.metrics.gaps.fetch_add(1, Relaxed);
        }
    }

    /// Adds one envelope to the mirror and hands it to local subscribers, in `seq` order.
    fn apply(&self, entry_epoch: u64, envelope: Envelope) {
        let mut mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if entry_epoch != mirror.epoch {
            // Written by another engine run than the announced one; the next poll sorts it out.
            return;
        }
        let log = mirror.channels.entry(envelope.channel.clone()).or_default();
        if envelope.seq <= log.seq {
            return;
        }
        if envelope.seq != log.seq + 1 {
            // A hole (the engine's buffer overflowed, or the history was trimmed before we read
            // it): a replay across it must say so, so the mirror restarts after it.
            if log.seq > 0 {
                self.metrics.gaps.fetch_add(1, Relaxed);
            }
            tracing::warn!(channel = %envelope.channel, from = log.seq, to = envelope.seq, "hole in the event stream");
            log.history.clear();
        }
        log.seq = envelope.seq;
        let envelope = Arc::new(envelope);
        if self.limits.size > 0 {
            if log.history.len() >= self.limits.size {
                log.history.pop_front();
            }
            log.history.push_back(Arc::clone(&envelope));
        }
        let oldest_kept = self.clock.now_us().saturating_sub(self.limits.max_age_us);
        while log.history.front().is_some_and(|e| e.ts_us < oldest_kept) {
            log.history.pop_front();
        }
        self.metrics.envelopes.fetch_add(1, Relaxed);
        self.metrics.applied(envelope.ts_us);
        // Sent under the lock so local subscribers see each channel's seq in order.
        let _ = self.sender.send(envelope);
    }
}

/// Decodes one stream entry (`<seq>-0` with `epoch`, `ts`, `event`).
pub(super) fn decode(
    channel: &Channel,
    entry: &redis::streams::StreamId,
) -> Result<(u64, Envelope), String> {
    let seq = entry
        .id
        .strip_suffix("-0")
        .and_then(|seq| seq.parse::<u64>().ok())
        .ok_or_else(|| format!("unexpected entry id {}", entry.id))?;
    let field = |name: &str| -> Result<String, String> {
        entry
            .get::<String>(name)
            .ok_or_else(|| format!("missing field {name}"))
    };
    let epoch = field("epoch")?
        .parse::<u64>()
        .map_err(|err| err.to_string())?;
    let ts_us = field("ts")?.parse::<i64>().map_err(|err| err.to_string())?;
    let event: Event = serde_json::from_str(&field("event")?).map_err(|err| err.to_string())?;
    if event.channel() != *channel {
        return Err(format!(
            "event of {} in the stream of {channel}",
            event.channel()
        ));
    }
    Ok((
        epoch,
        Envelope {
            channel: channel.clone(),
            seq,
            ts_us,
            event,
        },
    ))
}

/// A gateway node's reader of the engine's streams: fills a [`RedisFollowerBus`]'s mirror and
/// delivers what it reads to the local subscribers.
pub struct StreamReader {
    bus: Arc<RedisFollowerBus>,
    settings: RedisSettings,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// Runs the reader on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Follows the streams until the shutdown token is cancelled, reconnecting with backoff;
    /// after a reconnection it reads on from the last entry it has, so local clients get what was
    /// published meanwhile.
    pub async fn run(self) {
        let Self {
            bus,
            settings,
            shutdown,
        } = self;
        let Some(client) = link::client(&settings.url, "this gateway gets no events") else {
            return;
        };
        let mut ever_up = false;
        let mut backoff = link::backoff(&*bus.clock);
        loop {
            let Some(mut conn) =
                link::connect(&client, settings.read_timeout, &mut backoff, &shutdown).await
            else {
                return;
            };
            loop {
                match bus.poll(&mut conn, &settings, &mut ever_up).await {
                    Ok(()) => {}
                    Err(err) => {
                        tracing::warn!(%err, "redis: follow failed; reconnecting");
                        bus.set_health(BrokerHealth::Down);
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if !link::pause(&mut backoff, &shutdown).await {
                return;
            }
        }
    }
}

impl EventBus for RedisFollowerBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        tracing::error!(channel = %event.channel(), "a gateway node does not publish events; dropped");
        Arc::new(Envelope {
            channel: event.channel(),
            seq: 0,
            ts_us: self.clock.now_us(),
            event,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }

    fn epoch(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    fn last_seq(&self, channel: &Channel) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .channels
            .get(channel)
            .map_or(0, |log| log.seq)
    }

    fn replay(&self, channel: &Channel, after_seq: u64) -> Replay {
        let oldest_kept = self.clock.now_us().saturating_sub(self.limits.max_age_us);
        let mirror = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ChannelLog::replay(mirror.channels.get(channel), after_seq, oldest_kept)
    }

    fn health(&self) -> Option<watch::Receiver<BrokerHealth>> {
        Some(self.health.subscribe())
    }

    fn epoch_changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.epochs.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;
    use crate::SystemClock;

    fn follower(size: usize) -> RedisFollowerBus {
        let limits = HistoryLimits {
            size,
            max_age_us: 300 * 1_000_000,
        };
        RedisFollowerBus::new(
            16,
            limits,
            Arc::new(SystemClock),
            Arc::new(BrokerMetrics::default()),
        )
    }

    fn trade(seq: u64) -> Envelope {
        Envelope {
            channel: Channel::Trades,
            seq,
            ts_us: SystemClock.now_us(),
            event: Event::TradeExecuted(fixtures::trade(seq, "BTCUSDT", "2", "1")),
        }
    }

    fn seqs(replay: &Replay) -> Option<Vec<u64>> {
        match replay {
            Replay::Complete(envelopes) => Some(envelopes.iter().map(|e| e.seq).collect()),
            Replay::Gap { .. } => None,
        }
    }

    #[test]
    fn mirrors_in_order_and_replays_like_the_engine() {
        let bus = follower(3);
        bus.adopt_epoch(7);
        let mut rx = bus.subscribe();
        for seq in 1..=5 {
            bus.apply(7, trade(seq));
        }
        // TC0: a duplicate (re-read after a reconnect) and another epoch's entry are ignored
        bus.apply(7, trade(4));
        bus.apply(8, trade(6));
        let got: Vec<u64> = (0..5).map(|_| rx.try_recv().unwrap().seq).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert!(rx.try_recv().is_err());
        assert_eq!(bus.epoch(), 7);
        assert_eq!(bus.last_seq(&Channel::Trades), 5);
        // TC1: replay within, at the end of, and beyond the history
        assert_eq!(seqs(&bus.replay(&Channel::Trades, 3)), Some(vec![4, 5]));
        assert_eq!(seqs(&bus.replay(&Channel::Trades, 5)), Some(vec![]));
        assert_eq!(bus.replay(&Channel::Trades, 1), Replay::Gap { latest: 5 });
        assert_eq!(bus.replay(&Channel::Trades, 9), Replay::Gap { latest: 5 });
        assert_eq!(seqs(&bus.replay(&Channel::Signals, 0)), Some(vec![]));
    }

    #[test]
    fn a_hole_makes_replays_across_it_a_gap() {
        let bus = follower(10);
        bus.adopt_epoch(7);
        bus.apply(7, trade(1));
        bus.apply(7, trade(2));
        // The engine's buffer overflowed: 3 and 4 never reached Redis.
        bus.apply(7, trade(5));
        bus.apply(7, trade(6));
        assert_eq!(bus.replay(&Channel::Trades, 2), Replay::Gap { latest: 6 });
        assert_eq!(bus.replay(&Channel::Trades, 1), Replay::Gap { latest: 6 });
        assert_eq!(seqs(&bus.replay(&Channel::Trades, 5)), Some(vec![6]));
        assert_eq!(bus.metrics.gaps.load(Relaxed), 1);
        // TC1: an unreadable entry is a hole too, never read again
        bus.skip(&Channel::Trades, "7-0");
        assert_eq!(bus.last_seq(&Channel::Trades), 7);
        assert_eq!(bus.replay(&Channel::Trades, 6), Replay::Gap { latest: 7 });
    }

    #[test]
    fn a_new_epoch_forgets_the_old_run() {
        let bus = follower(10);
        let mut epochs = bus.epoch_changes().expect("a follower's epoch changes");
        bus.adopt_epoch(7);
        bus.apply(7, trade(1));
        assert!(epochs.has_changed().unwrap());
        assert_eq!(*epochs.borrow_and_update(), 7);
        // TC1: the same epoch again (every poll) is no change
        bus.adopt_epoch(7);
        assert!(!epochs.has_changed().unwrap());
        // TC2: a new run is announced, and `epoch()` says so, before its first envelope
        let mut rx = bus.subscribe();
        bus.adopt_epoch(9);
        assert!(epochs.has_changed().unwrap());
        assert_eq!(*epochs.borrow_and_update(), 9);
        assert!(rx.try_recv().is_err(), "nothing of the new run yet");
        assert_eq!(bus.epoch(), 9);
        assert_eq!(bus.last_seq(&Channel::Trades), 0);
        bus.apply(9, trade(1));
        assert_eq!(seqs(&bus.replay(&Channel::Trades, 0)), Some(vec![1]));
    }

    #[test]
    fn a_follower_never_publishes() {
        let bus = follower(10);
        let mut rx = bus.subscribe();
        let envelope = bus.publish(trade(1).event);
        assert_eq!(envelope.seq, 0);
        assert!(rx.try_recv().is_err());
        assert_eq!(bus.last_seq(&Channel::Trades), 0);
    }

    #[test]
    fn decodes_entries_and_rejects_bad_ones() {
        let event = serde_json::to_string(&trade(3).event).unwrap();
        let entry = |id: &str, event: &str| redis::streams::StreamId {
            id: id.to_owned(),
            map: [
                ("epoch", "7".to_owned()),
                ("ts", "12".to_owned()),
                ("event", event.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v.into_bytes())))
            .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        };
        let (epoch, envelope) = decode(&Channel::Trades, &entry("3-0", &event)).unwrap();
        assert_eq!((epoch, envelope.seq, envelope.ts_us), (7, 3, 12));
        assert!(decode(&Channel::Trades, &entry("3-1", &event)).is_err());
        assert!(decode(&Channel::Trades, &entry("3-0", "{}")).is_err());
        assert!(
            decode(&Channel::Alerts, &entry("3-0", &event)).is_err(),
            "wrong stream"
        );
    }
}
