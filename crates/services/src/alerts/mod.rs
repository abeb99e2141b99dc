//! Alert monitor: watches the tickers on the bus for large price moves and stalled feeds.

use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{Alert, Event, Symbol};
use rust_decimal::Decimal;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{Clock, EventBus, ServiceMetrics, Subscription};

/// The pure price-move and stall detectors.
pub mod detectors;

use detectors::{PriceMoveDetector, StallTracker};

/// Longest accepted window or stall limit: one day.
pub const MAX_SECS: u64 = 86_400;
/// Largest accepted price-move threshold, in percent.
pub const MAX_PRICE_MOVE_PCT: Decimal = Decimal::ONE_THOUSAND;

/// Stall checks run at least this often...
const MAX_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// ...and at most this often.
const MIN_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Settings of the alert monitor (`[alerts]`); missing keys take the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// A move of at least this many percent within the window raises `price_move`. Default 5.
    #[serde(deserialize_with = "crate::config::decimal")]
    pub price_move_pct: Decimal,
    /// Window of the price-move check, in seconds. Default 60.
    pub price_move_window_secs: u64,
    /// A symbol silent for longer than this raises `feed_stalled`. Default 10.
    pub feed_stall_secs: u64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            price_move_pct: Decimal::from(5),
            price_move_window_secs: 60,
            feed_stall_secs: 10,
        }
    }
}

impl AlertConfig {
    /// Checks `0 < price_move_pct <= 1000` and that both durations are 1 to 86400 seconds.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.price_move_pct <= Decimal::ZERO || self.price_move_pct > MAX_PRICE_MOVE_PCT {
            return Err(format!(
                "price_move_pct must be greater than 0 and at most {MAX_PRICE_MOVE_PCT}, got {}",
                self.price_move_pct
            ));
        }
        for (field, value) in [
            ("price_move_window_secs", self.price_move_window_secs),
            ("feed_stall_secs", self.feed_stall_secs),
        ] {
            if !(1..=MAX_SECS).contains(&value) {
                return Err(format!(
                    "{field} must be between 1 and {MAX_SECS}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

/// How often stalls are checked: every second, or a quarter of the stall limit if that is
/// shorter, but not more often than every 100 ms.
fn check_period(stall_after: Duration) -> Duration {
    (stall_after / 4).clamp(MIN_CHECK_PERIOD, MAX_CHECK_PERIOD)
}

/// The alert monitor.
///
/// Ticker events feed a [`PriceMoveDetector`] (times from the clock) and a [`StallTracker`]
/// (times from tokio's clock, so tests can pause it). `symbols` never seen count as silent since
/// [`AlertMonitor::new`]. Alerts are published as [`Event::Alert`] and counted in
/// `metrics.alerts_raised`; a lag on the bus is counted in `metrics.bus_lagged_events` and
/// monitoring carries on. The configuration should have passed [`AlertConfig::validate`];
/// out-of-range durations are clamped to 1..=86400 s instead of panicking.
pub struct AlertMonitor {
    events: Subscription,
    price_moves: PriceMoveDetector,
    stalls: StallTracker,
    /// How often stalls are checked.
    period: Duration,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for AlertMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertMonitor")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl AlertMonitor {
    /// Builds the monitor of `symbols` and subscribes it to `bus`; it stops when `shutdown` is
    /// cancelled.
    #[must_use]
    pub fn new(
        config: AlertConfig,
        symbols: Vec<Symbol>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let window = Duration::from_secs(config.price_move_window_secs.clamp(1, MAX_SECS));
        let stall_after = Duration::from_secs(config.feed_stall_secs.clamp(1, MAX_SECS));
        let lagged = Arc::clone(&metrics);
        let events = Subscription::new(bus.subscribe(), "alert monitor").on_lag(move |missed| {
            lagged.bus_lagged_events.inc_by(missed);
        });
        Self {
            events,
            price_moves: PriceMoveDetector::new(config.price_move_pct, window),
            stalls: StallTracker::new(symbols, Instant::now(), stall_after),
            period: check_period(stall_after),
            bus,
            clock,
            metrics,
            shutdown,
        }
    }

    /// Runs the monitor on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Watches the tickers until the shutdown token is cancelled or the bus closes.
    pub async fn run(mut self) {
        let mut checks = tokio::time::interval_at(Instant::now() + self.period, self.period);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                _ = checks.tick() => {
                    let stalled = self.stalls.check(Instant::now(), self.clock.now());
                    raise(self.bus.as_ref(), &self.metrics, stalled);
                }
                received = self.events.next() => match received {
                    Some(envelope) => {
                        let Event::Ticker(ticker) = &envelope.event else {
                            continue;
                        };
                        let now = self.clock.now();
                        let resumed = self.stalls.observe(&ticker.symbol, Instant::now(), now);
                        let moved = self.price_moves.observe(&ticker.symbol, ticker.price, now);
                        raise(self.bus.as_ref(), &self.metrics, resumed.into_iter().chain(moved));
                    }
                    None => break,
                },
            }
        }
        tracing::debug!("alert monitor stopped");
    }
}

/// Publishes alerts and counts them.
fn raise(bus: &dyn EventBus, metrics: &ServiceMetrics, alerts: impl IntoIterator<Item = Alert>) {
    for alert in alerts {
        tracing::info!(alert_type = ?alert.alert_type, message = %alert.message, "alert");
        bus.publish(Event::Alert(alert));
        ServiceMetrics::incr(&metrics.alerts_raised);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_enforces_ranges() {
        let ok = AlertConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            // TC0: threshold must be positive and sane
            (
                AlertConfig {
                    price_move_pct: Decimal::ZERO,
                    ..ok
                },
                "price_move_pct",
            ),
            (
                AlertConfig {
                    price_move_pct: Decimal::from(1001),
                    ..ok
                },
                "price_move_pct",
            ),
            // TC1: durations from 1 s to a day
            (
                AlertConfig {
                    price_move_window_secs: 0,
                    ..ok
                },
                "price_move_window_secs",
            ),
            (
                AlertConfig {
                    feed_stall_secs: 86_401,
                    ..ok
                },
                "feed_stall_secs",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn stall_checks_run_often_enough_but_not_too_often() {
        let cases = [
            // TC0: long limits: every second
            (10, 1_000),
            (4, 1_000),
            // TC1: short limits: a quarter of the limit
            (2, 500),
            (1, 250),
        ];
        for (stall_secs, period_ms) in cases {
            assert_eq!(
                check_period(Duration::from_secs(stall_secs)),
                Duration::from_millis(period_ms)
            );
        }
        assert_eq!(check_period(Duration::ZERO), MIN_CHECK_PERIOD);
    }
}
