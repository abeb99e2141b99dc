//! The simulated market: a feed actor walking seeded prices and a cloneable handle serving them.

use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::{Event, Ticker};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::config::{MAX_TICKS_PER_SECOND, MIN_TICKS_PER_SECOND, MarketConfig};
use super::price_model::{PriceModel, default_initial_price};
use super::{LatestTickers, ServesLatestTickers};
use crate::{Clock, EventBus, ServiceMetrics};

/// The feed never wakes more often than this; faster rates emit several ticks per wake.
const MIN_WAKE_PERIOD: Duration = Duration::from_millis(1);
/// During a long catch-up burst the feed yields to the runtime after this many steps.
const STEPS_PER_YIELD: u64 = 64;

/// Cloneable handle of the simulated market: serves the latest ticker of each symbol.
#[derive(Debug, Clone)]
pub struct SimulatedMarket {
    latest: LatestTickers,
}

impl SimulatedMarket {
    /// Builds the handle (latest tickers populated immediately with the initial prices, so trading
    /// works from the first instant) and the feed actor that drives it.
    ///
    /// It simulates `config.symbols` with the simulator's keys of `[market]`. The configuration
    /// should have passed [`MarketConfig::validate`]; if not, an
    /// out-of-range rate is clamped into range (a rate that is not a number becomes 1/s) and a
    /// symbol listed twice is simulated once, rather than panicking. The feed runs until
    /// `shutdown` is cancelled.
    #[must_use]
    pub fn new(
        config: &MarketConfig,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        metrics: Arc<ServiceMetrics>,
        shutdown: CancellationToken,
    ) -> (Self, SimulatedFeed) {
        let now = clock.now();
        let latest = LatestTickers::new(config.symbols.clone(), []);
        let symbols = latest.symbols().to_vec();
        let models: Vec<PriceModel> = symbols
            .iter()
            .map(|symbol| {
                let price = config
                    .initial_prices
                    .get(symbol)
                    .copied()
                    .unwrap_or_else(|| default_initial_price(symbol));
                PriceModel::new(symbol.clone(), price, config.seed, config.volatility_bps)
            })
            .collect();
        {
            let mut initial = latest.write();
            for model in &models {
                initial.insert(model.symbol().clone(), model.ticker(now));
            }
        }
        let rate = sanitize_rate(config.ticks_per_second);
        // The pacer counts single-symbol steps: `rate` per symbol, spread evenly over the period.
        #[allow(clippy::cast_precision_loss, reason = "a handful of symbols")]
        let steps_per_second = rate * models.len().max(1) as f64;
        let market = Self {
            latest: latest.clone(),
        };
        let feed = SimulatedFeed {
            models,
            latest,
            pacer: Pacer::new(steps_per_second),
            next: 0,
            bus,
            clock,
            metrics,
            shutdown,
        };
        (market, feed)
    }
}

impl ServesLatestTickers for SimulatedMarket {
    fn latest(&self) -> &LatestTickers {
        &self.latest
    }
}

/// The feed actor: walks every symbol's price, writes the latest tickers into the
/// [`SimulatedMarket`] handles and publishes [`Event::Ticker`] on the bus.
#[derive(Debug)]
pub struct SimulatedFeed {
    models: Vec<PriceModel>,
    latest: LatestTickers,
    pacer: Pacer,
    /// The model the next step moves: symbols take turns.
    next: usize,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
}

impl SimulatedFeed {
    /// Runs the feed on the tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Publishes the initial tickers at once, then `ticks_per_second` ticks of every symbol per
    /// second until the shutdown token is cancelled.
    ///
    /// The symbols take turns, evenly spaced: with ten symbols at 100 ticks/s each, one symbol
    /// moves every 0.1 ms rather than all ten in the same instant every 10 ms. A real exchange
    /// feed is spread out the same way, and subscribers of different symbols are not served in
    /// one burst.
    ///
    /// The feed wakes at most once a millisecond and emits as many ticks as are due by the elapsed
    /// (tokio) time, so high rates keep their average without sub-millisecond timers. After a stall
    /// it emits at most one second's worth at once and drops the rest of the backlog.
    pub async fn run(mut self) {
        let shutdown = self.shutdown.clone();
        self.publish_current();
        let start = Instant::now();
        let mut interval = tokio::time::interval(self.pacer.period());
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let steps = self.pacer.take_due(start.elapsed());
            for step in 1..=steps {
                if shutdown.is_cancelled() {
                    return;
                }
                self.step_next();
                // Keeps a one-second catch-up burst at a high rate from starving other tasks.
                if step % STEPS_PER_YIELD == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
        tracing::debug!("simulated feed stopped");
    }

    /// Publishes every symbol's current ticker without moving the walk.
    fn publish_current(&self) {
        let now = self.clock.now();
        let tickers: Vec<Ticker> = self.models.iter().map(|m| m.ticker(now)).collect();
        self.publish(tickers);
    }

    /// Moves the next symbol in turn one step and publishes it.
    fn step_next(&mut self) {
        let now = self.clock.now();
        let Some(model) = self.models.get_mut(self.next) else {
            return;
        };
        let ticker = model.step(now);
        self.next = (self.next + 1) % self.models.len();
        self.publish(vec![ticker]);
    }

    /// Stores the tickers as the latest (first, so a subscriber reacting to the event already
    /// reads this price from the handle), then publishes them.
    fn publish(&self, tickers: Vec<Ticker>) {
        {
            let mut latest = self.latest.write();
            for ticker in &tickers {
                latest.insert(ticker.symbol.clone(), ticker.clone());
            }
        }
        for ticker in tickers {
            self.bus.publish(Event::Ticker(ticker));
            ServiceMetrics::incr(&self.metrics.ticks_published);
        }
    }
}

/// Brings a rate into the accepted range instead of panicking on it later.
fn sanitize_rate(rate: f64) -> f64 {
    let sane = if rate.is_nan() {
        1.0
    } else {
        rate.clamp(MIN_TICKS_PER_SECOND, MAX_TICKS_PER_SECOND)
    };
    if sane.to_bits() != rate.to_bits() {
        tracing::warn!(rate, used = sane, "ticks_per_second out of range; clamped");
    }
    sane
}

/// Pure bookkeeping of how many tick rounds are due: `elapsed * rate` in total, minus those
/// already emitted, at most one second's worth at once.
#[derive(Debug, Clone, PartialEq)]
struct Pacer {
    rate: f64,
    emitted: u64,
    max_burst: u64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        // `as` saturates; the rate is at most 100 000 so this is exact.
        let max_burst = (rate.ceil() as u64).max(1);
        Self {
            rate,
            emitted: 0,
            max_burst,
        }
    }

    /// Time between wakes: one tick's worth, but never below [`MIN_WAKE_PERIOD`].
    fn period(&self) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.rate)
            .unwrap_or(MIN_WAKE_PERIOD)
            .max(MIN_WAKE_PERIOD)
    }

    /// Returns how many rounds to emit now and counts them as emitted; a backlog beyond
    /// `max_burst` is dropped.
    fn take_due(&mut self, elapsed: Duration) -> u64 {
        let due = (elapsed.as_secs_f64() * self.rate).floor() as u64;
        let deficit = due.saturating_sub(self.emitted);
        self.emitted = self.emitted.max(due);
        deficit.min(self.max_burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_emits_the_deficit_and_caps_bursts() {
        let mut pacer = Pacer::new(3.0);
        // TC0: nothing is due at the start
        assert_eq!(pacer.take_due(Duration::ZERO), 0);
        // TC1: a third of a second gives one tick, repeated wakes give nothing more
        assert_eq!(pacer.take_due(Duration::from_millis(334)), 1);
        assert_eq!(pacer.take_due(Duration::from_millis(400)), 0);
        // TC2: 10 s in total is 30 ticks, but one burst is at most 3 (one second's worth)
        assert_eq!(pacer.take_due(Duration::from_secs(10)), 3);
        // TC3: the dropped backlog is not emitted later
        assert_eq!(pacer.take_due(Duration::from_millis(10_100)), 0);
        assert_eq!(pacer.take_due(Duration::from_millis(10_334)), 1);
    }

    #[test]
    fn pacer_period_never_goes_below_a_millisecond() {
        let cases = [
            // TC0: slow rates wake once per tick
            (0.01, Duration::from_secs(100)),
            (2.0, Duration::from_millis(500)),
            // TC1: fast rates wake every millisecond
            (1_000.0, Duration::from_millis(1)),
            (100_000.0, Duration::from_millis(1)),
        ];
        for (rate, period) in cases {
            assert_eq!(Pacer::new(rate).period(), period, "rate {rate}");
        }
        // TC2: a high rate bursts at most one second's worth
        assert_eq!(
            Pacer::new(100_000.0).take_due(Duration::from_secs(5)),
            100_000
        );
        assert_eq!(Pacer::new(0.01).max_burst, 1);
    }

    #[test]
    fn rates_are_sanitized() {
        assert!((sanitize_rate(f64::NAN) - 1.0).abs() < f64::EPSILON);
        assert!((sanitize_rate(0.0) - MIN_TICKS_PER_SECOND).abs() < f64::EPSILON);
        assert!((sanitize_rate(f64::INFINITY) - MAX_TICKS_PER_SECOND).abs() < f64::EPSILON);
        assert!((sanitize_rate(5.0) - 5.0).abs() < f64::EPSILON);
    }
}
