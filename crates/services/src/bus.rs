use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use cryptobot_domain::{Channel, Event};
use tokio::sync::broadcast;

use crate::Clock;

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
}

/// The in-process event bus: one tokio broadcast channel, with sequence numbers counted per
/// channel under a short lock (never held across an await).
#[derive(Debug)]
pub struct InMemoryBus {
    sender: broadcast::Sender<Arc<Envelope>>,
    sequences: Mutex<HashMap<Channel, u64>>,
    clock: Arc<dyn Clock>,
}

impl InMemoryBus {
    /// Default number of envelopes retained for slow subscribers.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// Creates a bus keeping up to `capacity` envelopes for slow subscribers.
    #[must_use]
    pub fn new(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            sequences: Mutex::new(HashMap::new()),
            clock,
        }
    }
}

impl EventBus for InMemoryBus {
    fn publish(&self, event: Event) -> Arc<Envelope> {
        let channel = event.channel();
        // The lock also orders the send, so subscribers see each channel's seq strictly increasing.
        let mut sequences = self
            .sequences
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seq = sequences.entry(channel.clone()).or_insert(0);
        *seq += 1;
        let envelope = Arc::new(Envelope {
            channel,
            seq: *seq,
            ts_us: self.clock.now_us(),
            event,
        });
        // An error only means nobody is subscribed right now, which is fine for a broadcast.
        let _ = self.sender.send(Arc::clone(&envelope));
        envelope
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;
    use crate::SystemClock;

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
