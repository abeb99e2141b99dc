use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cryptobot_domain::{Alert, AlertType, Channel, Event, Severity};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{BrokerHealth, BrokerMetrics, RedisSettings, link, report_health};
use crate::{Clock, Envelope, EventBus, InMemoryBus, Replay};

/// Envelopes written per round trip while catching up.
const BATCH: usize = 256;

/// The engine's bus: numbers and serves events exactly like [`InMemoryBus`] (it is the single
/// source of `seq`), and also queues every envelope for an ordered writer to the Redis Streams.
///
/// While Redis is unreachable the queue keeps up to `publish_buffer` envelopes, flushed in order
/// on reconnection; beyond that the oldest are dropped, counted, and an alert says so (followers
/// see the `seq` jump and answer resumes across it with `recovered: false`).
#[derive(Debug)]
pub struct RedisPublishingBus {
    local: InMemoryBus,
    queue: Mutex<Queue>,
    wake: Notify,
    limit: usize,
    health: watch::Sender<BrokerHealth>,
    metrics: Arc<BrokerMetrics>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Arc<Envelope>>,
    /// Dropped since the last overflow alert.
    dropped: u64,
    /// Highest dropped `seq` per channel, not yet marked in its stream: a hole marker is written
    /// there so followers learn of the hole even when no later event of that channel follows.
    holes: HashMap<Channel, u64>,
}

impl RedisPublishingBus {
    /// Wraps the engine's local bus; spawn [`RedisPublishingBus::run_writer`] to write to Redis.
    #[must_use]
    pub fn new(local: InMemoryBus, publish_buffer: usize, metrics: Arc<BrokerMetrics>) -> Self {
        Self {
            local,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            limit: publish_buffer.max(1),
            health: watch::channel(BrokerHealth::Connecting).0,
            metrics,
        }
    }

    fn set_health(&self, health: BrokerHealth) {
        report_health(&self.health, &self.metrics, health);
    }

    /// Writes queued envelopes to Redis in order until `shutdown`, reconnecting with backoff.
    ///
    /// On its first connection it replaces the previous run's streams (a new epoch starts at
    /// `seq` 1); after a reconnection it only restores the epoch key (Redis may have restarted
    /// empty) and flushes the backlog.
    pub async fn run_writer(
        self: Arc<Self>,
        settings: RedisSettings,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) {
        let client = match redis::Client::open(settings.url.as_str()) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(%err, "invalid bus.redis_url; events stay local");
                return;
            }
        };
        let mut first = true;
        let mut ever_up = false;
        'connect: loop {
            let Some(mut conn) = link::connect(&client, Duration::from_secs(5), &shutdown).await
            else {
                return;
            };
            if let Err(err) = self.prepare(&mut conn, &settings, first).await {
                tracing::warn!(%err, "redis: cannot prepare streams");
                self.down();
                if !link::pause(&shutdown).await {
                    return;
                }
                continue;
            }
            first = false;
            if ever_up {
                self.metrics.reconnects.fetch_add(1, Relaxed);
            }
            ever_up = true;
            self.set_health(BrokerHealth::Up);
            tracing::info!("redis: engine publishing");
            loop {
                self.report_overflow(&clock);
                let batch: Vec<Arc<Envelope>> = {
                    let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    queue.pending.iter().take(BATCH).cloned().collect()
                };
                let no_holes = self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .holes
                    .is_empty();
                if batch.is_empty() && no_holes {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = self.wake.notified() => continue,
                    }
                }
                let holes = std::mem::take(
                    &mut self
                        .queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .holes,
                );
                if let Err(err) =
                    write_holes(&mut conn, &settings, self.local.epoch(), &holes).await
                {
                    tracing::warn!(%err, "redis: hole markers not written; retrying");
                    {
                        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        for (channel, seq) in holes {
                            let hole = queue.holes.entry(channel).or_default();
                            *hole = (*hole).max(seq);
                        }
                    }
                    self.down();
                    if !link::pause(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
                if let Err(err) =
                    write_batch(&mut conn, &settings, self.local.epoch(), &batch).await
                {
                    tracing::warn!(%err, backlog = self.backlog(), "redis: publish failed; buffering");
                    self.down();
                    if !link::pause(&shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                // Only what was written leaves the queue; an overflow may have dropped some of
                // the batch's envelopes meanwhile, so remove by seq, not by count.
                for written in &batch {
                    if queue
                        .pending
                        .front()
                        .is_some_and(|front| Arc::ptr_eq(front, written))
                    {
                        queue.pending.pop_front();
                    }
                }
                self.metrics
                    .publish_backlog
                    .store(queue.pending.len() as u64, Relaxed);
                self.metrics
                    .envelopes
                    .fetch_add(batch.len() as u64, Relaxed);
            }
        }
    }

    fn backlog(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .len()
    }

    /// Marks the link down; the gateway hub of every node tells its clients (unsequenced alert).
    fn down(&self) {
        self.set_health(BrokerHealth::Down);
    }

    /// Publishes one alert per overflow episode, counting what was lost.
    fn report_overflow(&self, clock: &Arc<dyn Clock>) {
        let dropped = std::mem::take(
            &mut self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dropped,
        );
        if dropped > 0 {
            tracing::error!(dropped, "redis publish buffer overflowed; events were lost");
            self.publish(Event::Alert(Alert {
                alert_type: AlertType::FeedStalled,
                severity: Severity::Critical,
                message: format!(
                    "event broker outage outlasted the publish buffer: {dropped} events were not \
                     delivered to other nodes; resuming across them reports recovered=false"
                ),
                symbol: None,
                raised_at: chrono::DateTime::from_timestamp_micros(clock.now_us())
                    .unwrap_or_default(),
            }));
        }
    }

    async fn prepare(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        settings: &RedisSettings,
        fresh: bool,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        if fresh {
            for channel in &settings.channels {
                pipe.del(settings.stream_key(channel)).ignore();
            }
        }
        pipe.set(settings.epoch_key(), self.local.epoch()).ignore();
        pipe.query_async::<()>(conn).await
    }
}

/// Marks each lost `seq` in its channel's stream (entry `<seq>-0` with field `hole`), before the
/// queued envelopes that follow it. A marker at or below the stream's last entry is not needed
/// (that envelope was written after all) and Redis refuses it, which is fine.
async fn write_holes(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    epoch: u64,
    holes: &HashMap<Channel, u64>,
) -> redis::RedisResult<()> {
    for (channel, seq) in holes {
        let result: redis::RedisResult<redis::Value> = redis::cmd("XADD")
            .arg(settings.stream_key(channel))
            .arg("MAXLEN")
            .arg("~")
            .arg(settings.stream_len.max(1))
            .arg(format!("{seq}-0"))
            .arg("epoch")
            .arg(epoch)
            .arg("hole")
            .arg(1)
            .query_async(conn)
            .await;
        match result {
            Ok(_) => {}
            Err(err) if err.to_string().contains("equal or smaller") => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Appends the batch in one pipelined round trip, in order. An entry whose ID is already in the
/// stream (written before a lost reply) is refused by Redis with an error we treat as success;
/// any other failure fails the batch, which is retried whole after reconnecting.
async fn write_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    epoch: u64,
    batch: &[Arc<Envelope>],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for envelope in batch {
        let event = serde_json::to_string(&envelope.event).map_err(|err| {
            redis::RedisError::from((redis::ErrorKind::Client, "serialize", err.to_string()))
        })?;
        pipe.cmd("XADD")
            .arg(settings.stream_key(&envelope.channel))
            .arg("MAXLEN")
            .arg("~")
            .arg(settings.stream_len.max(1))
            .arg(format!("{}-0", envelope.seq))
            .arg("epoch")
            .arg(epoch)
            .arg("ts")
            .arg(envelope.ts_us)
            .arg("event")
            .arg(event);
    }
    let results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(conn).await?;
    for result in results {
        match result {
            Ok(_) => {}
            Err(err) if err.to_string().contains("equal or smaller") => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

impl EventBus for RedisPublishingBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        let envelope = self.local.publish(event);
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.pending.len() >= self.limit
            && let Some(lost) = queue.pending.pop_front()
        {
            let hole = queue.holes.entry(lost.channel.clone()).or_default();
            *hole = (*hole).max(lost.seq);
            queue.dropped += 1;
            self.metrics.publish_dropped.fetch_add(1, Relaxed);
        }
        queue.pending.push_back(Arc::clone(&envelope));
        self.metrics
            .publish_backlog
            .store(queue.pending.len() as u64, Relaxed);
        drop(queue);
        self.wake.notify_one();
        envelope
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.local.subscribe()
    }

    fn epoch(&self) -> u64 {
        self.local.epoch()
    }

    fn last_seq(&self, channel: &Channel) -> u64 {
        self.local.last_seq(channel)
    }

    fn replay(&self, channel: &Channel, after_seq: u64) -> Replay {
        self.local.replay(channel, after_seq)
    }

    fn health(&self) -> Option<watch::Receiver<BrokerHealth>> {
        Some(self.health.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;
    use crate::SystemClock;

    #[test]
    fn the_buffer_is_bounded_and_counts_what_it_drops() {
        let metrics = Arc::new(BrokerMetrics::default());
        let local = InMemoryBus::new(16, Arc::new(SystemClock));
        let bus = RedisPublishingBus::new(local, 3, Arc::clone(&metrics));
        for price in ["1", "2", "3", "4", "5"] {
            bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", price)));
        }
        let queue = bus.queue.lock().unwrap();
        let queued: Vec<u64> = queue.pending.iter().map(|e| e.seq).collect();
        assert_eq!(queued, [3, 4, 5], "the oldest go first");
        assert_eq!(queue.dropped, 2);
        drop(queue);
        assert_eq!(metrics.publish_dropped.load(Relaxed), 2);
        assert_eq!(metrics.publish_backlog.load(Relaxed), 3);
        // Numbering and local delivery are the engine's own, unaffected by the broker.
        let btc = Channel::Ticker(fixtures::symbol("BTCUSDT"));
        assert_eq!(bus.last_seq(&btc), 5);
        // TC1: the next writer round reports the loss as a sequenced alert, queued in order
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        bus.report_overflow(&clock);
        assert_eq!(bus.last_seq(&Channel::Alerts), 1);
        let queue = bus.queue.lock().unwrap();
        let last = queue.pending.back().unwrap();
        let Event::Alert(alert) = &last.event else {
            panic!("alert expected")
        };
        assert!(alert.message.contains("2 events"), "{}", alert.message);
        // The buffer was still full, so the alert itself pushed one more out: counted, not hidden.
        assert_eq!(queue.dropped, 1);
        assert_eq!(
            queue.holes[&btc], 3,
            "the highest lost seq is marked for the followers"
        );
    }

    /// Needs a real Redis (`REDIS_URL`): the writer and a follower agree on every envelope, and
    /// writing a batch again (a lost reply) changes nothing.
    #[tokio::test]
    async fn a_follower_mirrors_what_the_writer_wrote() {
        let Some(url) = crate::scale::redis_url_or_skip("a_follower_mirrors_what_the_writer_wrote")
        else {
            return;
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let prefix = format!("cbtest-pub-{}-{}", std::process::id(), clock.now_us());
        let settings = RedisSettings {
            url: url.clone(),
            prefix: prefix.clone(),
            stream_len: 100,
            publish_buffer: 100,
            command_timeout: Duration::from_secs(1),
            channels: vec![Channel::Trades, Channel::Alerts],
        };
        let shutdown = CancellationToken::new();
        let local = InMemoryBus::new(16, Arc::clone(&clock));
        let engine = Arc::new(RedisPublishingBus::new(
            local,
            100,
            Arc::new(BrokerMetrics::default()),
        ));
        let writer = tokio::spawn(Arc::clone(&engine).run_writer(
            settings.clone(),
            Arc::clone(&clock),
            shutdown.clone(),
        ));
        let follower = Arc::new(super::super::RedisFollowerBus::new(
            16,
            crate::HistoryLimits::default(),
            Arc::clone(&clock),
            Arc::new(BrokerMetrics::default()),
        ));
        let mut rx = follower.subscribe();
        let reader = tokio::spawn(Arc::clone(&follower).run(settings.clone(), shutdown.clone()));
        let mut published = Vec::new();
        for id in 1..=5 {
            published.push(engine.publish(Event::TradeExecuted(fixtures::trade(
                id, "BTCUSDT", "2", "1",
            ))));
        }
        let mut mirrored = Vec::new();
        while mirrored.len() < 5 {
            let envelope = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the follower delivers in time")
                .unwrap();
            mirrored.push(envelope);
        }
        for (ours, theirs) in published.iter().zip(&mirrored) {
            assert_eq!(**ours, **theirs);
        }
        assert_eq!(follower.epoch(), engine.epoch());
        // TC1: the same batch again is accepted as already written
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        write_batch(&mut conn, &settings, engine.epoch(), &published)
            .await
            .unwrap();
        let len: usize = redis::cmd("XLEN")
            .arg(settings.stream_key(&Channel::Trades))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 5);
        shutdown.cancel();
        writer.await.unwrap();
        reader.await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(settings.epoch_key())
            .arg(settings.stream_key(&Channel::Trades))
            .arg(settings.stream_key(&Channel::Alerts))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
