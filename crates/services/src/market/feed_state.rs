//! Observable state of a market feed (connected, last update, reconnects, malformed messages),
//! shared by the feed that writes it and the health and metrics endpoints that read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

use crate::Clock;

/// No update recorded yet (an impossible timestamp).
const NEVER: i64 = i64::MIN;

/// Cloneable view of a feed's health; cheap to read from any thread (plain atomics).
#[derive(Debug, Clone)]
pub struct FeedState {
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct Inner {
    source: &'static str,
    connected: AtomicBool,
    stale: AtomicBool,
    last_update_us: AtomicI64,
    reconnects: AtomicU64,
    malformed: AtomicU64,
}

/// A point-in-time copy of a [`FeedState`], as `/api/v1/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedStatus {
    /// Name of the source, e.g. `binance` or `simulated`.
    pub source: &'static str,
    /// Whether the feed is connected to its source right now (always true for the simulator).
    pub connected: bool,
    /// Whether the feed has been silent longer than allowed and a `feed_stalled` alert is open.
    pub stale: bool,
    /// Milliseconds since the last market update, `None` before the first one.
    pub last_update_age_ms: Option<u64>,
    /// Connections re-established after the first one.
    pub reconnects: u64,
    /// Messages from the source that could not be understood and were skipped.
    pub malformed_messages: u64,
}

impl FeedState {
    /// A new state: disconnected, never updated, no reconnects.
    #[must_use]
    pub fn new(source: &'static str, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                connected: AtomicBool::new(false),
                stale: AtomicBool::new(false),
                last_update_us: AtomicI64::new(NEVER),
                reconnects: AtomicU64::new(0),
                malformed: AtomicU64::new(0),
            }),
            clock,
        }
    }

    /// The state of a feed that needs no connection, such as the simulator: always connected.
    #[must_use]
    pub fn always_connected(source: &'static str, clock: Arc<dyn Clock>) -> Self {
        let state = Self::new(source, clock);
        state.set_connected(true);
        state
    }

    /// Records whether the feed is connected.
    pub fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }

    /// Records whether the feed is stale.
    pub fn set_stale(&self, stale: bool) {
        self.inner.stale.store(stale, Ordering::Relaxed);
    }

    /// Records a market update now (by the injected clock).
    pub fn record_update(&self) {
        self.inner
            .last_update_us
            .store(self.clock.now_us(), Ordering::Relaxed);
    }

    /// Counts a reconnect.
    pub fn record_reconnect(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a malformed message.
    pub fn record_malformed(&self) {
        self.inner.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns a copy of the current state.
    #[must_use]
    pub fn status(&self) -> FeedStatus {
        let last = self.inner.last_update_us.load(Ordering::Relaxed);
        let last_update_age_ms = (last != NEVER).then(|| {
            let age_us = self.clock.now_us().saturating_sub(last).max(0);
            u64::try_from(age_us / 1_000).unwrap_or(0)
        });
        FeedStatus {
            source: self.inner.source,
            connected: self.inner.connected.load(Ordering::Relaxed),
            stale: self.inner.stale.load(Ordering::Relaxed),
            last_update_age_ms,
            reconnects: self.inner.reconnects.load(Ordering::Relaxed),
            malformed_messages: self.inner.malformed.load(Ordering::Relaxed),
        }
    }

    /// The feed's gauges and counters (label `source`), read at scrape time.
    #[must_use]
    pub fn collector(&self) -> crate::metrics::ReadAtScrape {
        let labels = [("source", self.inner.source)];
        let read = |pick: fn(&FeedStatus) -> Option<f64>| {
            let state = self.clone();
            move || pick(&state.status())
        };
        crate::metrics::ReadAtScrape::new()
            .labelled_gauge(
                "cryptobot_market_feed_connected",
                "1 when the market feed is connected to its source.",
                &labels,
                read(|status| Some(f64::from(u8::from(status.connected)))),
            )
            .labelled_gauge(
                "cryptobot_market_feed_stale",
                "1 when the market feed has been silent longer than allowed.",
                &labels,
                read(|status| Some(f64::from(u8::from(status.stale)))),
            )
            .labelled_gauge(
                "cryptobot_market_feed_last_update_age_seconds",
                "Seconds since the last market update (absent before the first).",
                &labels,
                // Precision loss is irrelevant for an age in seconds.
                read(|status| status.last_update_age_ms.map(|ms| ms as f64 / 1_000.0)),
            )
            .labelled_counter(
                "cryptobot_market_feed_reconnects_total",
                "Connections to the market source re-established.",
                &labels,
                read(|status| Some(status.reconnects as f64)),
            )
            .labelled_counter(
                "cryptobot_market_feed_malformed_messages_total",
                "Messages from the market source skipped because they could not be understood.",
                &labels,
                read(|status| Some(status.malformed_messages as f64)),
            )
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;
    use crate::ManualClock;

    #[test]
    fn status_reports_age_by_the_injected_clock() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        ));
        let state = FeedState::new("binance", clock.clone());
        // TC0: nothing yet
        let status = state.status();
        assert!(!status.connected);
        assert_eq!(status.last_update_age_ms, None);
        // TC1: an update 1.5 s ago, one reconnect, two malformed messages
        state.set_connected(true);
        state.record_update();
        clock.advance(TimeDelta::milliseconds(1_500));
        state.record_reconnect();
        state.record_malformed();
        state.record_malformed();
        assert_eq!(
            state.status(),
            FeedStatus {
                source: "binance",
                connected: true,
                stale: false,
                last_update_age_ms: Some(1_500),
                reconnects: 1,
                malformed_messages: 2,
            }
        );
        let registry = prometheus::Registry::new();
        state.collector().register(&registry).unwrap();
        let out = crate::metrics::encode(&registry);
        assert!(out.contains("cryptobot_market_feed_connected{source=\"binance\"} 1\n"));
        assert!(
            out.contains("cryptobot_market_feed_last_update_age_seconds{source=\"binance\"} 1.5\n")
        );
        assert!(
            out.contains("cryptobot_market_feed_malformed_messages_total{source=\"binance\"} 2\n")
        );
    }

    #[test]
    fn the_simulator_is_always_connected() {
        let state = FeedState::always_connected("simulated", Arc::new(crate::SystemClock));
        assert!(state.status().connected);
    }
}
