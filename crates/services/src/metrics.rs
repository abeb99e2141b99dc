use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the services, rendered in the Prometheus text format.
///
/// Plain atomics: incrementing is a single relaxed add, cheap enough for the tick path.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Ticker updates published by the market feed.
    pub ticks_published: AtomicU64,
    /// Trades executed and committed.
    pub trades_executed: AtomicU64,
    /// Trade commands rejected.
    pub trades_rejected: AtomicU64,
    /// Commands answered from the idempotency record instead of executing.
    pub trades_replayed: AtomicU64,
    /// Signals produced by strategies.
    pub signals_generated: AtomicU64,
    /// Alerts raised.
    pub alerts_raised: AtomicU64,
    /// Events a background consumer missed because it fell behind the bus.
    pub bus_lagged_events: AtomicU64,
}

impl ServiceMetrics {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counters = [
            (
                "cryptobot_ticks_published_total",
                "Ticker updates published by the market feed.",
                &self.ticks_published,
            ),
            (
                "cryptobot_trades_executed_total",
                "Trades executed and committed.",
                &self.trades_executed,
            ),
            (
                "cryptobot_trades_rejected_total",
                "Trade commands rejected.",
                &self.trades_rejected,
            ),
            (
                "cryptobot_trades_replayed_total",
                "Trade commands answered from the idempotency record.",
                &self.trades_replayed,
            ),
            (
                "cryptobot_signals_generated_total",
                "Signals produced by strategies.",
                &self.signals_generated,
            ),
            (
                "cryptobot_alerts_raised_total",
                "Alerts raised.",
                &self.alerts_raised,
            ),
            (
                "cryptobot_bus_lagged_events_total",
                "Events background consumers missed by falling behind the bus.",
                &self.bus_lagged_events,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_counters() {
        let metrics = ServiceMetrics::default();
        ServiceMetrics::incr(&metrics.trades_executed);
        ServiceMetrics::incr(&metrics.trades_executed);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "# TYPE cryptobot_trades_executed_total counter\ncryptobot_trades_executed_total 2\n"
        ));
        assert!(out.contains("cryptobot_alerts_raised_total 0\n"));
    }
}
