//! The fan-out hub: one task that reads the event bus once, serializes each event once and hands the
//! same bytes to every connection.
//!
//! Tickers go through one `watch` per symbol (latest value wins, so a slow reader is conflated by
//! construction); trades, portfolio, signals and alerts through one `broadcast` whose capacity is the
//! per-connection budget (`event_buffer`): a connection that falls further behind sees `Lagged` and is
//! closed as a slow consumer. The hub never awaits a client.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix_web::web::Bytes;
use cryptobot_domain::{Channel, Event, Symbol};
use cryptobot_services::scale::BrokerHealth;
use cryptobot_services::{Clock, Envelope, EventBus, PortfolioService};
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;
use crate::protocol::{EventMeta, ServerMessage, TradeNotification};

/// Longest wait for the periodic portfolio summary before that round is skipped.
const PORTFOLIO_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A serialized `ticker_update` with its sequence number (to count conflated updates).
#[derive(Debug, Clone)]
pub(crate) struct TickerFrame {
    /// Sequence number of the event on its `ticker:<SYMBOL>` channel.
    pub(crate) seq: u64,
    /// The JSON text, shared by every connection.
    pub(crate) bytes: Bytes,
}

/// A serialized never-dropped event and the channel it belongs to (for per-connection filtering).
#[derive(Debug)]
pub(crate) struct EventFrame {
    /// `trades`, `portfolio`, `signals` or `alerts`.
    pub(crate) channel: Channel,
    /// Sequence number on the channel (a snapshot repeats the last one).
    pub(crate) seq: u64,
    /// True for the periodic portfolio snapshot, which is never a duplicate of a live event.
    pub(crate) snapshot: bool,
    /// The JSON text, shared by every connection.
    pub(crate) bytes: Bytes,
}

/// What connections subscribe to; shared between the hub task and the connection actors.
#[derive(Debug)]
pub(crate) struct HubShared {
    /// Latest ticker frame per symbol. The lock is only held to look up or insert a sender, never
    /// across an await.
    tickers: RwLock<HashMap<Symbol, watch::Sender<Option<TickerFrame>>>>,
    /// Never-dropped events.
    events: broadcast::Sender<Arc<EventFrame>>,
    /// The epoch the hub delivers; it changes (engine restarted) before any frame of the new run
    /// and every connection then closes (`End::NewEpoch`): its `seq`s are the old run's.
    epoch: watch::Sender<u64>,
}

impl HubShared {
    /// Creates the channels; `event_buffer` is how far one connection may fall behind.
    pub(crate) fn new(event_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(event_buffer.max(1));
        Self {
            tickers: RwLock::new(HashMap::new()),
            events,
            epoch: watch::channel(0).0,
        }
    }

    /// Returns a receiver that sees every later change of the delivered epoch.
    pub(crate) fn epoch_receiver(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Returns a receiver of the symbol's ticker frames; its current value (if any) is the latest.
    pub(crate) fn ticker_receiver(&self, symbol: &Symbol) -> watch::Receiver<Option<TickerFrame>> {
        self.ticker_sender(symbol).subscribe()
    }

    /// Returns a receiver of every never-dropped event published from now on.
    pub(crate) fn event_receiver(&self) -> broadcast::Receiver<Arc<EventFrame>> {
        self.events.subscribe()
    }

    fn ticker_sender(&self, symbol: &Symbol) -> watch::Sender<Option<TickerFrame>> {
        if let Some(sender) = self
            .tickers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(symbol)
        {
            return sender.clone();
        }
        // Callers only pass symbols the market knows (validated) or the bus published, so the map
        // is bounded by the configured symbols.
        self.tickers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(symbol.clone())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

/// The hub actor: owns the bus subscription.
pub(crate) struct Hub {
    /// Channels the connections read.
    pub(crate) shared: Arc<HubShared>,
    /// The one bus subscription of the gateway.
    pub(crate) bus: broadcast::Receiver<Arc<Envelope>>,
    /// Source of the periodic portfolio summary.
    pub(crate) portfolio: Arc<dyn PortfolioService>,
    /// Period of the portfolio push; `None` disables it.
    pub(crate) portfolio_interval: Option<Duration>,
    /// Time source for the periodic summary's timestamps.
    pub(crate) clock: Arc<dyn Clock>,
    /// Counters.
    pub(crate) metrics: Arc<GatewayMetrics>,
    /// Ends the hub.
    pub(crate) shutdown: CancellationToken,
    /// Last `seq` seen on the `portfolio` channel; periodic snapshots repeat it.
    pub(crate) portfolio_seq: u64,
    /// The bus's broker link, when it has one: its changes are announced on `alerts`.
    pub(crate) health: Option<watch::Receiver<BrokerHealth>>,
    /// Last `seq` seen on the `alerts` channel; broker announcements repeat it.
    pub(crate) alerts_seq: u64,
    /// The bus's epoch changes, when its epoch can change (a gateway node following an engine).
    pub(crate) epochs: Option<watch::Receiver<u64>>,
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
                received = self.bus.recv() => match received {
                    Ok(envelope) => self.publish(&envelope),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Clients see the gap in `seq`; tickers recover with the next update.
                        GatewayMetrics::add(&self.metrics.hub_lagged_events, missed);
                        tracing::warn!(missed, "gateway hub fell behind the event bus");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        tracing::info!("event bus closed; gateway hub stops");
                        break;
                    }
                },
                () = tick(periodic.as_mut()) => self.push_portfolio().await,
            }
        }
    }

    /// Serializes one envelope once and publishes it to the right channel.
    pub(crate) fn publish(&mut self, envelope: &Envelope) {
        match envelope.event {
            Event::PortfolioChanged(_) => self.portfolio_seq = envelope.seq,
            Event::Alert(_) => self.alerts_seq = envelope.seq,
            _ => {}
        }
        let bytes = frame_bytes(envelope);
        if let Event::Ticker(ticker) = &envelope.event {
            self.shared
                .ticker_sender(&ticker.symbol)
                .send_replace(Some(TickerFrame {
                    seq: envelope.seq,
                    bytes,
                }));
        } else {
            // An error only means no connection is open.
            let _ = self.shared.events.send(Arc::new(EventFrame {
                channel: envelope.channel.clone(),
                seq: envelope.seq,
                snapshot: false,
                bytes,
            }));
        }
    }

    /// The engine restarted: forgets the old run's latest tickers and `seq`s (a connection that
    /// subscribes now must not take an old ticker's `seq` for the new run's), then tells every
    /// connection, which closes.
    fn new_epoch(&mut self, epoch: u64) {
        tracing::info!(
            epoch,
            "new epoch: closing every connection (they resume from the new run)"
        );
        for sender in self
            .shared
            .tickers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            sender.send_replace(None);
        }
        self.portfolio_seq = 0;
        self.alerts_seq = 0;
        self.shared.epoch.send_replace(epoch);
    }

    /// Fetches the summary once and broadcasts it to every connection (not one call per client).
    async fn push_portfolio(&mut self) {
        if self.shared.events.receiver_count() == 0 {
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
        let _ = self.shared.events.send(Arc::new(EventFrame {
            channel: Channel::Portfolio,
            seq: self.portfolio_seq,
            snapshot: true,
            bytes: Bytes::from(message.to_json()),
        }));
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
        let _ = self.shared.events.send(Arc::new(EventFrame {
            channel: Channel::Alerts,
            seq: self.alerts_seq,
            snapshot: true,
            bytes: Bytes::from(message.to_json()),
        }));
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

/// Resolves when the epoch a connection was opened in is over (`receiver` from
/// [`HubShared::epoch_receiver`]); never for a connection without one, or once the hub is gone.
pub(crate) async fn epoch_over(receiver: Option<&mut watch::Receiver<u64>>) {
    if let Some(receiver) = receiver
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
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

/// Subscribes the hub to the bus (before any connection exists) and spawns it.
pub(crate) fn spawn(
    shared: Arc<HubShared>,
    bus: &dyn EventBus,
    portfolio: Arc<dyn PortfolioService>,
    portfolio_interval: Option<Duration>,
    clock: Arc<dyn Clock>,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let hub = Hub {
        shared,
        bus: bus.subscribe(),
        portfolio,
        portfolio_interval,
        clock,
        metrics,
        shutdown,
        portfolio_seq: 0,
        health: bus.health(),
        alerts_seq: 0,
        epochs: bus.epoch_changes(),
    };
    tokio::spawn(hub.run())
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;
    use cryptobot_services::trading::MockPortfolioService;
    use cryptobot_services::{InMemoryBus, SystemClock};

    use super::*;

    fn hub(bus: &InMemoryBus, shared: Arc<HubShared>) -> Hub {
        Hub {
            shared,
            bus: bus.subscribe(),
            portfolio: Arc::new(MockPortfolioService::new()),
            portfolio_interval: None,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(GatewayMetrics::default()),
            shutdown: CancellationToken::new(),
            portfolio_seq: 0,
            health: None,
            alerts_seq: 0,
            epochs: None,
        }
    }

    #[tokio::test]
    async fn tickers_conflate_to_the_newest_frame() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new(16));
        let mut hub = hub(&bus, Arc::clone(&shared));
        let symbol = fixtures::symbol("BTCUSDT");
        let mut rx = shared.ticker_receiver(&symbol);
        for price in ["1", "2", "3"] {
            let envelope = bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", price)));
            hub.publish(&envelope);
        }
        assert!(rx.has_changed().unwrap());
        let frame = rx.borrow_and_update().clone().unwrap();
        assert_eq!(frame.seq, 3);
        let value: serde_json::Value = serde_json::from_slice(&frame.bytes).unwrap();
        assert_eq!(value["payload"]["price"], "3");
        assert!(!rx.has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_new_epoch_forgets_the_old_tickers_and_tells_every_connection() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new(16));
        let mut hub = hub(&bus, Arc::clone(&shared));
        let symbol = fixtures::symbol("BTCUSDT");
        let envelope = bus.publish(Event::Ticker(fixtures::ticker("BTCUSDT", "1")));
        hub.publish(&envelope);
        let mut connection = shared.epoch_receiver();
        hub.new_epoch(9);
        // TC0: the connection's wait ends; a later connection waits for the next change only
        tokio::time::timeout(Duration::from_secs(5), epoch_over(Some(&mut connection)))
            .await
            .expect("the epoch is over");
        let mut later = shared.epoch_receiver();
        assert!(!later.has_changed().unwrap());
        // TC1: no old-run ticker is served as the latest one
        assert!(shared.ticker_receiver(&symbol).borrow().is_none());
        // TC2: without an epoch receiver, the wait never ends
        let never = tokio::time::timeout(Duration::from_millis(50), epoch_over(None)).await;
        assert!(never.is_err());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), epoch_over(Some(&mut later)))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn events_are_serialized_once_and_shared() {
        let bus = InMemoryBus::new(64, Arc::new(SystemClock));
        let shared = Arc::new(HubShared::new(16));
        let mut hub = hub(&bus, Arc::clone(&shared));
        let (mut a, mut b) = (shared.event_receiver(), shared.event_receiver());
        let envelope = bus.publish(Event::TradeExecuted(fixtures::trade(
            1, "BTCUSDT", "2", "1",
        )));
        hub.publish(&envelope);
        let (fa, fb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert!(Arc::ptr_eq(&fa, &fb), "one frame for every connection");
        assert_eq!(fa.channel, Channel::Trades);
    }
}
