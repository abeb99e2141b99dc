use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cryptobot_domain::{Alert, AlertType, Channel, Event, Severity};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{BrokerMetrics, EngineLease, RedisSettings, link, report_health};
use crate::{
    BrokerHealth, Clock, Envelope, EventBus, InMemoryBus, Inherited, Replay, ServiceError,
};

/// Envelopes written per round trip while catching up.
const BATCH: usize = 256;

/// The fence of every write to Redis: it goes ahead only while the lease `KEYS[1]` is ours
/// (`ARGV[1]`; a free lease is taken for `ARGV[2]` ms, as the keeper would), so an engine that was
/// replaced can never write into its successor's streams, whatever it still has queued.
macro_rules! fenced {
    ($body:literal) => {
        concat!(
            r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif holder ~= ARGV[1] then
  return redis.error_reply('FENCED another engine holds the lease')
end
",
            $body
        )
    };
}

/// Appends entries: `KEYS[2..]` are the streams, `ARGV[3]` the MAXLEN, then per entry its ID,
/// its number of fields and the field/value pairs. An ID already in the stream (written before
/// a lost reply) is fine; any other error fails the call.
const XADD_FENCED: &str = fenced!(
    r"
local a = 4
for i = 2, #KEYS do
  local n = tonumber(ARGV[a + 1])
  local args = {'XADD', KEYS[i], 'MAXLEN', '~', ARGV[3], ARGV[a]}
  for j = 1, 2 * n do args[#args + 1] = ARGV[a + 1 + j] end
  local reply = redis.pcall(unpack(args))
  if type(reply) == 'table' and reply.err and not string.find(reply.err, 'equal or smaller', 1, true) then
    return redis.error_reply(reply.err)
  end
  a = a + 2 + 2 * n
end
return #KEYS - 1"
);

/// Announces the run: `KEYS[2]` (the epoch key) is set to `ARGV[3]`, and the streams `KEYS[3..]`
/// (the previous run's, on the first connection only) are deleted.
const PREPARE_FENCED: &str = fenced!(
    r"
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('SET', KEYS[2], ARGV[3])
return 1"
);

/// True for the error of a fenced script: another engine holds the lease.
fn is_fenced(err: &redis::RedisError) -> bool {
    err.to_string().contains("FENCED")
}

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
    /// This engine's lease: the fence of commits ([`EventBus::check_fence`]) and of every write.
    lease: Arc<EngineLease>,
    /// Set when this run continues the epoch in Redis: its streams are kept, and this is what
    /// the previous run published of the books.
    inherited: Option<Inherited>,
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
    /// Wraps the engine's local bus; spawn its [`RedisPublishingBus::writer`] to write to Redis.
    /// `lease` is the engine's (renewed by a [`super::LeaseKeeper`]); its token is the value
    /// every write checks.
    #[must_use]
    pub fn new(
        local: InMemoryBus,
        publish_buffer: usize,
        metrics: Arc<BrokerMetrics>,
        lease: Arc<EngineLease>,
    ) -> Self {
        Self {
            local,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            limit: publish_buffer.max(1),
            health: watch::channel(BrokerHealth::Connecting).0,
            metrics,
            lease,
            inherited: None,
        }
    }

    /// This run continues the epoch of `local` as found in Redis: the streams are kept (new
    /// entries follow theirs) instead of being replaced, and the trading engine learns what its
    /// predecessor published ([`EventBus::inherited`]).
    #[must_use]
    pub fn continuing(mut self, inherited: Inherited) -> Self {
        self.inherited = Some(inherited);
        self
    }

    /// The task that writes this bus's envelopes to Redis until `shutdown` (see
    /// [`StreamWriter::run`]); `clock` times the writes.
    #[must_use]
    pub fn writer(
        self: &Arc<Self>,
        settings: RedisSettings,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> StreamWriter {
        StreamWriter {
            bus: Arc::clone(self),
            settings,
            clock,
            shutdown,
        }
    }

    /// Stops the writer for good: another engine holds the lease.
    fn fenced(&self) {
        tracing::error!(
            backlog = self.backlog(),
            "redis: another engine holds the lease; this engine writes nothing more (its queued events are not published)"
        );
        self.lease.lose();
    }

    fn set_health(&self, health: BrokerHealth) {
        report_health(&self.health, &self.metrics, health);
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
        let mut call = redis::cmd("EVAL");
        // A continued epoch keeps its streams: they are what gateways follow.
        let streams = if fresh && self.inherited.is_none() {
            settings.channels.len()
        } else {
            0
        };
        call.arg(PREPARE_FENCED)
            .arg(2 + streams)
            .arg(settings.lease_key())
            .arg(settings.epoch_key());
        for channel in settings.channels.iter().take(streams) {
            call.arg(settings.stream_key(channel));
        }
        fence_args(&mut call, &self.lease)
            .arg(self.local.epoch())
            .query_async::<i64>(conn)
            .await
            .map(drop)
    }
}

/// The fence's arguments: the lease token and its time-to-live in ms.
fn fence_args<'a>(call: &'a mut redis::Cmd, lease: &EngineLease) -> &'a mut redis::Cmd {
    call.arg(lease.token())
        .arg(u64::try_from(lease.ttl().as_millis()).unwrap_or(u64::MAX))
}

/// One entry of [`XADD_FENCED`].
struct Entry<'a> {
    stream: String,
    id: String,
    fields: Vec<(&'static str, std::borrow::Cow<'a, str>)>,
}

/// Appends `entries` in order in one fenced call.
async fn xadd_fenced(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    lease: &EngineLease,
    entries: &[Entry<'_>],
) -> redis::RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut call = redis::cmd("EVAL");
    call.arg(XADD_FENCED)
        .arg(1 + entries.len())
        .arg(settings.lease_key());
    for entry in entries {
        call.arg(&entry.stream);
    }
    fence_args(&mut call, lease).arg(settings.stream_len.max(1));
    for entry in entries {
        call.arg(&entry.id).arg(entry.fields.len());
        for (name, value) in &entry.fields {
            call.arg(*name).arg(value.as_ref());
        }
    }
    call.query_async::<i64>(conn).await.map(drop)
}

/// Marks each lost `seq` in its channel's stream (entry `<seq>-0` with field `hole`), before the
/// queued envelopes that follow it. A marker at or below the stream's last entry is not needed
/// (that envelope was written after all) and Redis refuses it, which is fine.
async fn write_holes(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    lease: &EngineLease,
    epoch: u64,
    holes: &HashMap<Channel, u64>,
) -> redis::RedisResult<()> {
    let epoch = epoch.to_string();
    let entries: Vec<Entry<'_>> = holes
        .iter()
        .map(|(channel, seq)| Entry {
            stream: settings.stream_key(channel),
            id: format!("{seq}-0"),
            fields: vec![("epoch", epoch.as_str().into()), ("hole", "1".into())],
        })
        .collect();
    xadd_fenced(conn, settings, lease, &entries).await
}

/// Appends the batch in one round trip, in order, behind the fence. An entry whose ID is already
/// in the stream (written before a lost reply) is accepted as written; any other failure fails
/// the batch, which is retried whole after reconnecting.
async fn write_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    settings: &RedisSettings,
    lease: &EngineLease,
    epoch: u64,
    batch: &[Arc<Envelope>],
) -> redis::RedisResult<()> {
    let epoch = epoch.to_string();
    let mut entries = Vec::with_capacity(batch.len());
    for envelope in batch {
        let event = serde_json::to_string(&envelope.event).map_err(|err| {
            redis::RedisError::from((redis::ErrorKind::Client, "serialize", err.to_string()))
        })?;
        entries.push(Entry {
            stream: settings.stream_key(&envelope.channel),
            id: format!("{}-0", envelope.seq),
            fields: vec![
                ("epoch", epoch.as_str().into()),
                ("ts", envelope.ts_us.to_string().into()),
                ("event", event.into()),
            ],
        });
    }
    xadd_fenced(conn, settings, lease, &entries).await
}

/// The engine's writer to Redis Streams: drains a [`RedisPublishingBus`]'s queue in order.
pub struct StreamWriter {
    bus: Arc<RedisPublishingBus>,
    settings: RedisSettings,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Runs the writer on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Writes queued envelopes to Redis in order until the shutdown token is cancelled,
    /// reconnecting with backoff.
    ///
    /// On its first connection it replaces the previous run's streams (a new epoch starts at
    /// `seq` 1) unless this run continues their epoch; after a reconnection it only restores the epoch key (Redis may have restarted
    /// empty) and flushes the backlog.
    pub async fn run(self) {
        let Self {
            bus,
            settings,
            clock,
            shutdown,
        } = self;
        let Some(client) = link::client(&settings.url, "events stay local") else {
            return;
        };
        let mut first = true;
        let mut ever_up = false;
        let lost = bus.lease.lost();
        let mut backoff = link::backoff(&*clock);
        'connect: loop {
            let Some(mut conn) =
                link::connect(&client, Duration::from_secs(5), &mut backoff, &shutdown).await
            else {
                return;
            };
            if let Err(err) = bus.prepare(&mut conn, &settings, first).await {
                if is_fenced(&err) {
                    return bus.fenced();
                }
                tracing::warn!(%err, "redis: cannot prepare streams");
                bus.down();
                if !link::pause(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
            first = false;
            if ever_up {
                bus.metrics.reconnects.fetch_add(1, Relaxed);
            }
            ever_up = true;
            bus.set_health(BrokerHealth::Up);
            tracing::info!("redis: engine publishing");
            loop {
                bus.report_overflow(&clock);
                let batch: Vec<Arc<Envelope>> = {
                    let queue = bus.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    queue.pending.iter().take(BATCH).cloned().collect()
                };
                let no_holes = bus
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .holes
                    .is_empty();
                if batch.is_empty() && no_holes {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = bus.wake.notified() => continue,
                        // The keeper found the lease taken: stop now, not at the next write.
                        () = lost.cancelled() => return bus.fenced(),
                    }
                }
                let holes = std::mem::take(
                    &mut bus
                        .queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .holes,
                );
                if let Err(err) =
                    write_holes(&mut conn, &settings, &bus.lease, bus.local.epoch(), &holes).await
                {
                    if is_fenced(&err) {
                        return bus.fenced();
                    }
                    tracing::warn!(%err, "redis: hole markers not written; retrying");
                    {
                        let mut queue = bus.queue.lock().unwrap_or_else(PoisonError::into_inner);
                        for (channel, seq) in holes {
                            let hole = queue.holes.entry(channel).or_default();
                            *hole = (*hole).max(seq);
                        }
                    }
                    bus.down();
                    if !link::pause(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
                if let Err(err) =
                    write_batch(&mut conn, &settings, &bus.lease, bus.local.epoch(), &batch).await
                {
                    if is_fenced(&err) {
                        return bus.fenced();
                    }
                    tracing::warn!(%err, backlog = bus.backlog(), "redis: publish failed; buffering");
                    bus.down();
                    if !link::pause(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
                let mut queue = bus.queue.lock().unwrap_or_else(PoisonError::into_inner);
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
                bus.metrics
                    .publish_backlog
                    .store(queue.pending.len() as u64, Relaxed);
                bus.metrics.envelopes.fetch_add(batch.len() as u64, Relaxed);
            }
        }
    }
}

impl EventBus for RedisPublishingBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        let envelope = self.local.publish(event);
        if self.lease.is_lost() {
            // Replaced by another engine: nothing more goes to Redis (the writer has stopped).
            return envelope;
        }
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

    fn check_fence(&self) -> Result<(), ServiceError> {
        self.lease.check()
    }

    fn inherited(&self) -> Option<Inherited> {
        self.inherited.clone()
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
        let lease = Arc::new(EngineLease::new(local.epoch(), Duration::from_secs(10)));
        let bus = RedisPublishingBus::new(local, 3, Arc::clone(&metrics), lease);
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
            lease_ttl: Duration::from_secs(10),
            read_timeout: Duration::from_millis(750),
            channels: vec![Channel::Trades, Channel::Alerts],
        };
        let shutdown = CancellationToken::new();
        let local = InMemoryBus::new(16, Arc::clone(&clock));
        let lease = Arc::new(EngineLease::new(local.epoch(), settings.lease_ttl));
        let engine = Arc::new(RedisPublishingBus::new(
            local,
            100,
            Arc::new(BrokerMetrics::default()),
            Arc::clone(&lease),
        ));
        let writer = engine
            .writer(settings.clone(), Arc::clone(&clock), shutdown.clone())
            .spawn();
        let follower = Arc::new(super::super::RedisFollowerBus::new(
            16,
            crate::HistoryLimits::default(),
            Arc::clone(&clock),
            Arc::new(BrokerMetrics::default()),
        ));
        let mut rx = follower.subscribe();
        let reader = follower.reader(settings.clone(), shutdown.clone()).spawn();
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
        write_batch(&mut conn, &settings, &lease, engine.epoch(), &published)
            .await
            .unwrap();
        let len: usize = redis::cmd("XLEN")
            .arg(settings.stream_key(&Channel::Trades))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 5);
        // TC2: once another engine holds the lease, nothing more is written and the lease is
        // marked lost (the writer stops)
        let _: () = redis::cmd("SET")
            .arg(settings.lease_key())
            .arg(engine.epoch() + 1)
            .query_async(&mut conn)
            .await
            .unwrap();
        engine.publish(Event::TradeExecuted(fixtures::trade(
            6, "BTCUSDT", "2", "1",
        )));
        tokio::time::timeout(Duration::from_secs(10), lease.lost().cancelled())
            .await
            .expect("the writer sees the fence");
        writer.await.unwrap();
        let len: usize = redis::cmd("XLEN")
            .arg(settings.stream_key(&Channel::Trades))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 5, "the fenced write did not happen");
        assert!(engine.check_fence().is_err());
        shutdown.cancel();
        reader.await.unwrap();
        let _: () = redis::cmd("DEL")
            .arg(settings.lease_key())
            .arg(settings.epoch_key())
            .arg(settings.stream_key(&Channel::Trades))
            .arg(settings.stream_key(&Channel::Alerts))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
