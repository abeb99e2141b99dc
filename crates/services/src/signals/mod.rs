//! Signals: the moving-average crossover engine that turns tickers into signals, and the auto-trader.

use std::collections::HashMap;
use std::sync::Arc;

use cryptobot_domain::{Event, Signal, Symbol, Ticker};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Clock, EventBus, ServiceMetrics, Subscription};

mod auto_trader;
/// The pure SMA crossover strategy.
pub mod sma;

pub use auto_trader::AutoTrader;
use sma::{STRATEGY_NAME, SmaCrossover};

/// Largest accepted long window, in ticks.
pub const MAX_WINDOW: usize = 10_000;

/// Settings of the signal engine (`[signals]`); missing keys take the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalConfig {
    /// Run the strategy at all. Default true.
    pub enabled: bool,
    /// Ticks in the short average. Default 5.
    pub short_window: usize,
    /// Ticks in the long average. Default 20.
    pub long_window: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            short_window: 5,
            long_window: 20,
        }
    }
}

impl SignalConfig {
    /// Checks `1 <= short_window < long_window <= 10000`.
    ///
    /// # Errors
    /// A message naming the violated bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.short_window < 1 {
            return Err("short_window must be at least 1".to_owned());
        }
        if self.short_window >= self.long_window {
            return Err(format!(
                "short_window ({}) must be less than long_window ({})",
                self.short_window, self.long_window
            ));
        }
        if self.long_window > MAX_WINDOW {
            return Err(format!(
                "long_window must be at most {MAX_WINDOW}, got {}",
                self.long_window
            ));
        }
        Ok(())
    }
}

/// The signal engine: every ticker on the bus feeds its symbol's [`SmaCrossover`], and each
/// crossing is published as [`Event::Signal`] stamped with the clock.
///
/// It subscribes in [`SignalEngine::new`], so it sees every ticker published after that call.
/// A lag on the bus is counted in `metrics.bus_lagged_events` and the engine carries on with the
/// next prices. When disabled, or when the configuration is invalid (logged), it only waits for
/// the shutdown token.
pub struct SignalEngine {
    config: SignalConfig,
    events: Subscription,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
    /// One strategy per symbol, created at its first ticker.
    strategies: HashMap<Symbol, SmaCrossover>,
}

impl std::fmt::Debug for SignalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalEngine")
            .field("config", &self.config)
            .field("symbols", &self.strategies.len())
            .finish_non_exhaustive()
    }
}

impl SignalEngine {
    /// Builds the engine and subscribes it to `bus`; it stops when `shutdown` is cancelled.
    #[must_use]
    pub fn new(
        config: SignalConfig,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let lagged = Arc::clone(&metrics);
        let events = Subscription::new(bus.subscribe(), "signal engine").on_lag(move |missed| {
            lagged.bus_lagged_events.inc_by(missed);
        });
        Self {
            config,
            events,
            bus,
            clock,
            metrics,
            shutdown,
            strategies: HashMap::new(),
        }
    }

    /// Runs the engine on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Turns tickers into signals until the shutdown token is cancelled or the bus closes.
    pub async fn run(mut self) {
        let invalid = self.config.validate().err();
        if let Some(problem) = &invalid {
            tracing::error!(%problem, "signal engine not started: invalid configuration");
        }
        if !self.config.enabled || invalid.is_some() {
            // Idle until shutdown, so the server awaits every task alike.
            self.shutdown.cancelled().await;
            return;
        }
        while let Some(envelope) = self.events.next_until(&self.shutdown).await {
            if let Event::Ticker(ticker) = &envelope.event {
                self.on_ticker(ticker);
            }
        }
        tracing::debug!("signal engine stopped");
    }

    fn on_ticker(&mut self, ticker: &Ticker) {
        let config = self.config;
        let strategy = self
            .strategies
            .entry(ticker.symbol.clone())
            .or_insert_with(|| SmaCrossover::new(config.short_window, config.long_window));
        if let Some((action, confidence, reason)) = strategy.on_price(ticker.price) {
            let signal = Signal {
                symbol: ticker.symbol.clone(),
                action,
                strategy: STRATEGY_NAME.to_owned(),
                price: ticker.price,
                confidence,
                reason,
                generated_at: self.clock.now(),
            };
            tracing::debug!(symbol = %signal.symbol, action = ?signal.action, "signal");
            self.bus.publish(Event::Signal(signal));
            ServiceMetrics::incr(&self.metrics.signals_generated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_enforces_window_bounds() {
        let cases = [
            // TC0: defaults and the extremes are fine
            (5, 20, None),
            (1, 2, None),
            (9_999, 10_000, None),
            // TC1: zero short window
            (0, 20, Some("at least 1")),
            // TC2: short not below long
            (20, 20, Some("less than")),
            (21, 20, Some("less than")),
            // TC3: long too large
            (5, 10_001, Some("at most 10000")),
        ];
        for (short_window, long_window, expected) in cases {
            let config = SignalConfig {
                enabled: true,
                short_window,
                long_window,
            };
            match (config.validate(), expected) {
                (Ok(()), None) => {}
                (Err(err), Some(part)) => assert!(err.contains(part), "{err}"),
                (got, _) => panic!("{short_window}/{long_window}: unexpected {got:?}"),
            }
        }
        assert_eq!(SignalConfig::default().validate(), Ok(()));
    }
}
