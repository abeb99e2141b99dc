//! The fan-out hub: one task that reads the event bus once, serializes each event once and hands the
//! same bytes to every connection.
//!
//! Every frame goes through one `broadcast` with one receiver per worker thread (see `fanout.rs`),
//! so each event crosses threads once per worker, not once per connection. The hub never awaits a
//! client.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix_web::web::Bytes;
use cryptobot_domain::{Channel, Event, Symbol};
use cryptobot_services::{BrokerHealth, Clock, Envelope, EventBus, PortfolioService, Subscription};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;
use crate::protocol::{EventMeta, ServerMessage, TradeNotification};

/// Longest wait for the periodic portfolio summary before that round is skipped.
const PORTFOLIO_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A serialized event as the hub hands it to the workers: the same bytes for every connection.
#[derive(Debug)]
pub(crate) struct HubFrame {
    /// The event's channel (`ticker:<SYMBOL>`, `trades`, ...).
    pub(crate) channel: Channel,
    /// Sequence number on the channel (a snapshot repeats the last one).
    pub(crate) seq: u64,
    /// True for the periodic portfolio snapshot and broker announcements: never a duplicate.
    pub(crate) snapshot: bool,
    /// The engine restarted: every connection closes (`End::NewEpoch`) before any frame of the
    /// new run reaches it, since its `seq`s are the old run's. Such a frame carries no bytes.
    pub(crate) new_epoch: bool,
    /// When the event happened (its `ts_us`; 0 for frames the hub makes itself).
    pub(crate) ts_us: i64,
    /// The JSON text.
    pub(crate) bytes: Bytes,
    /// When the hub received the event from the bus (`None` for frames the hub makes itself):
    /// where `cryptobot_ws_delivery_seconds` starts.
    pub(crate) entered: Option<std::time::Instant>,
}

/// What the hub shares with the workers' fan-outs and the connections.
#[derive(Debug)]
pub(crate) struct HubShared {
    /// Every frame, once per worker (each worker's fan-out holds one receiver).
    frames: broadcast::Sender<Arc<HubFrame>>,
    /// Newest ticker per symbol; written once per ticker event, read when a client subscribes.
    latest: RwLock<HashMap<Symbol, Arc<HubFrame>>>,
}

impl HubShared {
    /// Frames a worker may fall behind the hub before it must give up its connections' events.
    pub(crate) const CAPACITY: usize = 65_536;

    /// Creates the channel.
    pub(crate) fn new() -> Self {
        let (frames, _) = broadcast::channel(Self::CAPACITY);
        Self {
            frames,
            latest: RwLock::new(HashMap::new()),
        }
    }

    /// A receiver of every frame published from now on (one per worker).
    pub(crate) fn frame_receiver(&self) -> broadcast::Receiver<Arc<HubFrame>> {
        self.frames.subscribe()
    }

    /// The newest ticker frame of a symbol, if one was published.
    pub(crate) fn latest_ticker(&self, symbol: &Symbol) -> Option<Arc<HubFrame>> {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(symbol)
            .cloned()
    }

    /// Hands a frame to every worker (an error only means no worker listens yet).
    fn send(&self, frame: HubFrame) {
        let frame = Arc::new(frame);
        if let Channel::Ticker(symbol) = &frame.channel {
            let mut latest = self.latest.write().unwrap_or_else(PoisonError::into_inner);
            // The map is bounded by the symbols the bus publishes (the configured ones).
            match latest.get_mut(symbol) {
                Some(entry) => *entry = Arc::clone(&frame),
                None => {
                    latest.insert(symbol.clone(), Arc::clone(&frame));
                }
            }
        }
        let _ = self.frames.send(frame);
    }
}

/// The hub actor: owns the bus subscription.
pub(crate) struct Hub {
    /// Channels the connections read.
    shared: Arc<HubShared>,
    /// The one bus subscription of the gateway. A lag is counted in `hub_lagged_events`: clients
    /// see the gap in `seq`, tickers recover with the next update.
    bus: Subscription,
    /// Source of the periodic portfolio summary.
    portfolio: Arc<dyn PortfolioService>,
    /// Period of the portfolio push; `None` disables it.
    portfolio_interval: Option<Duration>,
    /// Time source for the periodic summary's timestamps.
    clock: Arc<dyn Clock>,
    /// Counters.
    metrics: Arc<GatewayMetrics>,
    /// Ends the hub.
    shutdown: CancellationToken,
    /// Last `seq` seen on the `portfolio` channel; periodic snapshots repeat it.
    portfolio_seq: u64,
    /// The bus's epoch changes, when its epoch can change (a gateway node following an engine).
    epochs: Option<watch::Receiver<u64>>,
    /// The bus's broker link, when it has one: its changes are announced on `alerts`.
    health: Option<watch::Receiver<BrokerHealth>>,
    /// Last `seq` seen on the `alerts` channel; broker announcements repeat it.
    alerts_seq: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("portfolio_interval", &self.portfolio_interval)
            .field("portfolio_seq", &self.portfolio_seq)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Subscribes the hub to the bus now (before any connection exists), so no event published
    /// after this returns is missed; it ends when `shutdown` is cancelled or the bus closes.
    pub(crate) fn new(
        shared: Arc<HubShared>,
        bus: &dyn EventBus,
        portfolio: Arc<dyn PortfolioService>,
        portfolio_interval: Option<Duration>,
        clock: Arc<dyn Clock>,
        metrics: Arc<GatewayMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let lagged = Arc::clone(&metrics);
        let subscription = Subscription::new(bus.subscribe(), "gateway hub")
            .on_lag(move |missed| GatewayMetrics::add(&lagged.hub_lagged_events, missed));
        Self {
            shared,
            bus: subscription,
            portfolio,
            portfolio_interval,
            clock,
            metrics,
            shutdown,
            portfolio_seq: 0,
            health: bus.health(),
            alerts_seq: 0,
            epochs: bus.epoch_changes(),
        }
    }

    /// Runs the hub on the tokio runtime.
    #[must_use]
    pub(crate) fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Runs until the shutdown token is cancelled or the bus closes.
    pub(crate) async fn run(mut self) {
        let mut periodic = self.portfolio_interval.map(|period| {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                // Before the bus: the follower announces a new epoch before its first envelope.
                epoch = epoch_change(self.epochs.as_mut()) => match epoch {
                    Some(epoch) => self.new_epoch(epoch),
                    None => self.epochs = None,
                },
                // Before the bus: "broker back" goes out before the events it delivers.
                health = health_change(self.health.as_mut()) => match health {
                    Some(health) => self.announce(health),
                    None => self.health = None,
                },
                received = self.bus.next() => match received {
                    Some(envelope) => self.publish(&envelope),
                    None => {
                        tracing::info!("event bus closed; gateway hub stops");
                        break;
                    }
                },
                () = tick(periodic.as_mut()) => self.push_portfolio().await,
            }
        }
    }

    /// Serializes one envelope once and hands it to every worker.
    pub(crate) fn publish(&mut self, envelope: &Envelope) {
        let entered = std::time::Instant::now();
        match envelope.event {
            Event::PortfolioChanged(_) => self.portfolio_seq = envelope.seq,
            Event::Alert(_) => self.alerts_seq = envelope.seq,
            _ => {}
        }
        self.shared.send(HubFrame {
            channel: envelope.channel.clone(),
            seq: envelope.seq,
            snapshot: false,
            new_epoch: false,
            ts_us: envelope.ts_us,
            bytes: frame_bytes(envelope),
            entered: Some(entered),
        });
    }

    /// The engine restarted: forgets the old run's latest tickers and `seq`s (a connection that
    /// subscribes now must not take an old ticker's `seq` for the new run's), then tells every
    /// worker, whose connections close.
    fn new_epoch(&mut self, epoch: u64) {
        tracing::info!(
            epoch,
            "new epoch: closing every connection (they resume from the new run)"
        );
        self.shared
            .latest
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.portfolio_seq = 0;
        self.alerts_seq = 0;
        self.shared.send(HubFrame {
            channel: Channel::Alerts,
            seq: 0,
            snapshot: true,
            new_epoch: true,
            ts_us: 0,
            bytes: Bytes::new(),
            entered: None,
        });
    }

    /// Fetches the summary once and broadcasts it to every connection (not one call per client).
    async fn push_portfolio(&mut self) {
        if self
            .metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            return;
        }
        let summary =
            match tokio::time::timeout(PORTFOLIO_FETCH_TIMEOUT, self.portfolio.summary()).await {
                Ok(Ok(summary)) => summary,
                Ok(Err(err)) => {
                    GatewayMetrics::incr(&self.metrics.portfolio_fetch_errors);
                    tracing::warn!(%err, "periodic portfolio summary failed");
                    return;
                }
                Err(_) => {
                    GatewayMetrics::incr(&self.metrics.portfolio_fetch_errors);
                    tracing::warn!("periodic portfolio summary timed out");
                    return;
                }
            };
        let message = ServerMessage::PortfolioUpdate {
            payload: Box::new(summary),
            meta: EventMeta::new(
                Channel::Portfolio,
                self.portfolio_seq,
                self.clock.now_us(),
                true,
            ),
        };
        self.shared.send(HubFrame {
            channel: Channel::Portfolio,
            seq: self.portfolio_seq,
            snapshot: true,
            new_epoch: false,
            ts_us: 0,
            bytes: Bytes::from(message.to_json()),
            entered: None,
        });
    }
}

impl Hub {
    /// Tells every client on `alerts` that the event broker went away or came back, as an
    /// unsequenced alert (`meta.snapshot: true`, `seq` repeating the channel's last): it is this
    /// node's observation, not an event of the engine, so it is neither numbered nor replayed.
    fn announce(&self, health: BrokerHealth) {
        let Some(message) =
            crate::dispatch::broker_alert(health, self.alerts_seq, self.clock.now_us())
        else {
            return;
        };
        tracing::info!(?health, "announcing the event broker state to clients");
        self.shared.send(HubFrame {
            channel: Channel::Alerts,
            seq: self.alerts_seq,
            snapshot: true,
            new_epoch: false,
            ts_us: 0,
            bytes: Bytes::from(message.to_json()),
            entered: None,
        });
    }
}

/// Waits for the next change of the broker state; `None` once its sender is gone, forever when
/// the bus has no broker.
async fn health_change(health: Option<&mut watch::Receiver<BrokerHealth>>) -> Option<BrokerHealth> {
    match health {
        Some(health) => match health.changed().await {
            Ok(()) => Some(*health.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Waits for the next epoch of the bus; `None` once its sender is gone, forever when the epoch
/// cannot change.
async fn epoch_change(epochs: Option<&mut watch::Receiver<u64>>) -> Option<u64> {
    match epochs {
        Some(epochs) => match epochs.changed().await {
            Ok(()) => Some(*epochs.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// The JSON frame of a published envelope (live, or replayed to a resuming client), exactly as
/// clients receive it. The hub calls it once per event; every connection shares the bytes.
#[must_use]
pub fn frame_bytes(envelope: &Envelope) -> Bytes {
    let meta = EventMeta::new(
        envelope.channel.clone(),
        envelope.seq,
        envelope.ts_us,
        false,
    );
    let message = match &envelope.event {
        Event::Ticker(ticker) => ServerMessage::TickerUpdate {
            payload: ticker.clone(),
            meta,
        },
        Event::TradeExecuted(trade) => ServerMessage::TradeNotification {
            payload: Box::new(TradeNotification::from(trade.clone())),
            meta,
        },
        Event::PortfolioChanged(summary) => ServerMessage::PortfolioUpdate {
            payload: Box::new(summary.clone()),
            meta,
        },
        Event::Signal(signal) => ServerMessage::Signal {
            payload: signal.clone(),
            meta,
        },
        Event::Alert(alert) => ServerMessage::Alert {
            payload: alert.clone(),
            meta,
        },
        Event::OrderUpdated(update) => ServerMessage::OrderUpdate {
            payload: update.clone(),
            meta,
        },
        Event::Candle(candle) => ServerMessage::Candle {
            payload: candle.clone(),
            meta,
        },
        Event::BotStateChanged(bot) => ServerMessage::BotStateUpdate {
            payload: bot.clone(),
            meta,
        },
    };
    Bytes::from(message.to_json())
}

/// Waits for the next tick, or forever when the timer is disabled.
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;
    use cryptobot_services::trading::MockPortfolioService;
    use cryptobot_services::{InMemoryBus, SystemClock};

    use super::*;

    fn hub(bus: &InMemoryBus, shared: Arc<HubShared>) -> Hub {
        Hub::new(
            shared,
            bus,
            Arc::new(MockPortfolioService::new()),
            None,
            Arc::new(SystemClock),
            Arc::new(GatewayMetrics::default()),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn the_hub_subscribes_when_built_and_stops_on_shutdown() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new());
        let shutdown = CancellationToken::new();
        let hub = Hub::new(
            Arc::clone(&shared),
            &bus,
            Arc::new(MockPortfolioService::new()),
            None,
            Arc::new(SystemClock),
            Arc::new(GatewayMetrics::default()),
            shutdown.clone(),
        );
        let mut worker = shared.frame_receiver();
        // Published between `new` and `spawn`: the subscription already exists.
        bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        let task = hub.spawn();
        let frame = tokio::time::timeout(Duration::from_secs(5), worker.recv())
            .await
            .expect("the hub forwards the event")
            .unwrap();
        assert_eq!(frame.channel, Channel::Ticker(fixtures::symbol("BTCUSDT")));
        assert_eq!(frame.seq, 1);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the hub ends on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn the_newest_ticker_is_kept_for_new_subscribers() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new());
        let mut hub = hub(&bus, Arc::clone(&shared));
        let symbol = fixtures::symbol("BTCUSDT");
        assert!(shared.latest_ticker(&symbol).is_none());
        for price in ["1", "2", "3"] {
            let envelope = bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", price)));
            hub.publish(&envelope);
        }
        let frame = shared.latest_ticker(&symbol).unwrap();
        assert_eq!(frame.seq, 3);
        let value: serde_json::Value = serde_json::from_slice(&frame.bytes).unwrap();
        assert_eq!(value["payload"]["price"], "3");
    }

    #[tokio::test]
    async fn a_new_epoch_forgets_the_old_tickers_and_tells_every_worker() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new());
        let mut hub = hub(&bus, Arc::clone(&shared));
        let symbol = fixtures::symbol("BTCUSDT");
        let envelope = bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        hub.publish(&envelope);
        let mut worker = shared.frame_receiver();
        hub.new_epoch(9);
        // TC0: the workers get the epoch's end in order with the frames
        let frame = worker.try_recv().unwrap();
        assert!(frame.new_epoch);
        // TC1: no old-run ticker is served as the latest one
        assert!(shared.latest_ticker(&symbol).is_none());
        assert_eq!((hub.portfolio_seq, hub.alerts_seq), (0, 0));
    }

    #[tokio::test]
    async fn each_event_is_serialized_once_and_shared_by_every_worker() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new());
        let mut hub = hub(&bus, Arc::clone(&shared));
        let (mut a, mut b) = (shared.frame_receiver(), shared.frame_receiver());
        let envelope = bus.publish(Event::TradeExecuted(fixtures::trade(
            1, "BTCUSDT", "2", "1",
        )));
        hub.publish(&envelope);
        let (fa, fb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert!(Arc::ptr_eq(&fa, &fb), "one frame for every worker");
        assert_eq!(fa.channel, Channel::Trades);
        assert_eq!(fa.seq, 1);
        assert!(!fa.snapshot && !fa.new_epoch);
    }
}
