//! Signals: the moving-average crossover engine that turns tickers into signals, and the auto-trader.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptobot_domain::{Event, Signal, Symbol};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Clock, EventBus, ServiceMetrics};

mod auto_trader;
/// The pure SMA crossover strategy.
pub mod sma;

pub use auto_trader::{AutoTraderConfig, spawn_auto_trader};
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

/// Spawns the signal engine: every ticker on the bus feeds its symbol's [`SmaCrossover`], and each
/// crossing is published as [`Event::Signal`] stamped with `clock`.
///
/// It subscribes before returning, so it sees every ticker published after this call. A lag on
/// the bus is counted in `metrics.bus_lagged_events` and the engine carries on with the next
/// prices. When disabled, or when the configuration is invalid (logged), the task only waits for
/// `shutdown`.
pub fn spawn_signal_engine(
    config: SignalConfig,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    if !config.enabled {
        return tokio::spawn(async move { shutdown.cancelled().await });
    }
    if let Err(problem) = config.validate() {
        tracing::error!(%problem, "signal engine not started: invalid configuration");
        return tokio::spawn(async move { shutdown.cancelled().await });
    }
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        let mut strategies: HashMap<Symbol, SmaCrossover> = HashMap::new();
        loop {
            let envelope = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = events.recv() => match received {
                    Ok(envelope) => envelope,
                    Err(RecvError::Lagged(missed)) => {
                        metrics.bus_lagged_events.fetch_add(missed, Ordering::Relaxed);
                        tracing::warn!(missed, "signal engine lagged behind the bus");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            let Event::Ticker(ticker) = &envelope.event else {
                continue;
            };
            let strategy = strategies
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
                    generated_at: clock.now(),
                };
                tracing::debug!(symbol = %signal.symbol, action = ?signal.action, "signal");
                bus.publish(Event::Signal(signal));
                ServiceMetrics::incr(&metrics.signals_generated);
            }
        }
        tracing::debug!("signal engine stopped");
    })
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
