use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cryptobot_domain::{Side, Symbol, TradeOrigin};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, PullingGauge, Registry,
};

/// Upper bounds (seconds) of the latency histograms: 0.5 ms to 5 s, about three per decade, so
/// a p99 of an in-process command (sub-millisecond) and of a forwarded one (tens of ms) both
/// fall between two bounds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Rejection codes whose series exist from the start (at 0), so a rate over them is defined
/// before the first rejection; other codes appear when they first occur.
const COMMON_REJECTIONS: [&str; 6] = [
    "insufficient_funds",
    "insufficient_position",
    "no_position",
    "no_price",
    "order_too_small",
    "storage_error",
];

/// Origins of a trade, for the series of `cryptobot_trades_executed_total` made at start.
const ORIGINS: [TradeOrigin; 4] = [
    TradeOrigin::Manual,
    TradeOrigin::Auto,
    TradeOrigin::StopLoss,
    TradeOrigin::TakeProfit,
];

/// Counters of the services, exported by the node that runs the engine.
///
/// Prometheus metrics are shared atomics: an increment is one relaxed add, cheap enough for the
/// tick path. They are created unregistered; [`ServiceMetrics::register`] adds them to the
/// server's own registry (never the process-global one: several servers share a test process).
#[derive(Clone)]
pub struct ServiceMetrics {
    /// Ticker updates published by the market feed.
    pub ticks_published: IntCounter,
    /// Trades executed and committed, by `symbol`, `side` and `origin`.
    pub trades_executed: IntCounterVec,
    /// Trade commands rejected, by error `code`.
    pub trades_rejected: IntCounterVec,
    /// Commands answered from the idempotency record instead of executing.
    pub trades_replayed: IntCounter,
    /// Signals produced by strategies.
    pub signals_generated: IntCounter,
    /// Alerts raised.
    pub alerts_raised: IntCounter,
    /// Events a background consumer missed because it fell behind the bus.
    pub bus_lagged_events: IntCounter,
    /// Engine commands from the moment the handle queued them to their answer, by `command`.
    pub engine_command_seconds: HistogramVec,
    /// Reads how many commands wait in the engine's channel; set once by the engine's handle.
    engine_queue: Arc<OnceLock<QueueDepth>>,
}

/// Reads the engine's command queue depth at scrape time.
type QueueDepth = Box<dyn Fn() -> usize + Send + Sync>;

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics")
            .field("trades_replayed", &self.trades_replayed.get())
            .finish_non_exhaustive()
    }
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    // expect: the names and help texts are constants that satisfy Prometheus' rules.
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // expect: as above.
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// A latency histogram in seconds with [`LATENCY_BUCKETS`], labelled by `labels`.
///
/// # Panics
/// Never for a valid constant name (it is checked by the tests of every caller).
#[must_use]
pub fn latency_histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    // expect: the names and help texts are constants that satisfy Prometheus' rules.
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl ServiceMetrics {
    /// Every series at zero, unregistered.
    #[must_use]
    pub fn new() -> Self {
        let trades_rejected = counter_vec(
            "cryptobot_trades_rejected_total",
            "Trade commands rejected, by error code.",
            &["code"],
        );
        for code in COMMON_REJECTIONS {
            trades_rejected.with_label_values(&[code]);
        }
        Self {
            ticks_published: counter(
                "cryptobot_ticks_published_total",
                "Ticker updates published by the market feed.",
            ),
            trades_executed: counter_vec(
                "cryptobot_trades_executed_total",
                "Trades executed and committed, by symbol, side and origin.",
                &["symbol", "side", "origin"],
            ),
            trades_rejected,
            trades_replayed: counter(
                "cryptobot_trades_replayed_total",
                "Trade commands answered from the idempotency record.",
            ),
            signals_generated: counter(
                "cryptobot_signals_generated_total",
                "Signals produced by strategies.",
            ),
            alerts_raised: counter("cryptobot_alerts_raised_total", "Alerts raised."),
            bus_lagged_events: counter(
                "cryptobot_bus_lagged_events_total",
                "Events background consumers missed by falling behind the bus.",
            ),
            engine_command_seconds: latency_histogram(
                "cryptobot_engine_command_seconds",
                "Engine commands from queued to answered, by command.",
                &["command"],
            ),
            engine_queue: Arc::new(OnceLock::new()),
        }
    }

    /// Adds one to a counter.
    pub fn incr(counter: &IntCounter) {
        counter.inc();
    }

    /// The sum of a counter's samples over all its labels (tests and logs; never a hot path).
    #[must_use]
    pub fn total(counter: &impl prometheus::core::Collector) -> u64 {
        let sum: f64 = counter
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value())
            .sum();
        // Counts are whole numbers far below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let total = sum as u64;
        total
    }

    /// Counts an executed trade.
    pub fn trade_executed(&self, symbol: &Symbol, side: Side, origin: TradeOrigin) {
        self.trades_executed
            .with_label_values(&[symbol.as_str(), side.as_str(), origin.as_str()])
            .inc();
    }

    /// Counts a rejected trade command by its error code.
    pub fn trade_rejected(&self, code: &str) {
        self.trades_rejected.with_label_values(&[code]).inc();
    }

    /// Records how long an engine command took from queued to answered.
    pub fn engine_command(&self, command: &str, took: Duration) {
        self.engine_command_seconds
            .with_label_values(&[command])
            .observe(took.as_secs_f64());
    }

    /// Makes the executed-trade series of every symbol, side and origin exist at zero, so a
    /// rate over them is defined before the first trade.
    pub fn preset_symbols(&self, symbols: &[Symbol]) {
        for symbol in symbols {
            for side in [Side::Buy, Side::Sell] {
                for origin in ORIGINS {
                    self.trades_executed.with_label_values(&[
                        symbol.as_str(),
                        side.as_str(),
                        origin.as_str(),
                    ]);
                }
            }
        }
    }

    /// Sets how the engine's queue depth is read (by the engine's handle; later calls are
    /// ignored: one engine per node).
    pub fn watch_engine_queue(&self, depth: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.engine_queue.set(Box::new(depth));
    }

    /// Adds every series to `registry` (a node that runs the engine).
    ///
    /// # Errors
    /// A [`prometheus::Error`] when a series of the same name is registered already.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for counter in [
            &self.ticks_published,
            &self.trades_replayed,
            &self.signals_generated,
            &self.alerts_raised,
            &self.bus_lagged_events,
        ] {
            registry.register(Box::new(counter.clone()))?;
        }
        registry.register(Box::new(self.trades_executed.clone()))?;
        registry.register(Box::new(self.trades_rejected.clone()))?;
        registry.register(Box::new(self.engine_command_seconds.clone()))?;
        let queue = Arc::clone(&self.engine_queue);
        // Read at scrape time from the channel itself: nothing on the command path updates it.
        #[allow(
            clippy::cast_precision_loss,
            reason = "a queue depth is far below 2^53"
        )]
        let depth = PullingGauge::new(
            "cryptobot_engine_queue_depth",
            "Commands waiting in the trading engine's channel.",
            Box::new(move || queue.get().map_or(0.0, |depth| depth() as f64)),
        )?;
        registry.register(Box::new(depth))
    }
}

/// Reads a value at scrape time; `None` leaves the series out of that scrape.
type Read = Box<dyn Fn() -> Option<f64> + Send + Sync>;

/// Series whose values live elsewhere (atomics of a link, `/proc`, a clock) and are read when
/// Prometheus scrapes: one sample per family, optionally with constant labels.
///
/// The owners keep their plain atomics (one relaxed add on their paths); only the scrape turns
/// them into Prometheus families.
#[derive(Default)]
pub struct ReadAtScrape {
    rows: Vec<(prometheus::core::Desc, prometheus::proto::MetricType, Read)>,
}

impl std::fmt::Debug for ReadAtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rows.iter().map(|(desc, _, _)| &desc.fq_name))
            .finish()
    }
}

impl ReadAtScrape {
    /// No series yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn row(
        mut self,
        kind: prometheus::proto::MetricType,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        let labels = labels
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        // expect: names, help texts and label names are constants of this workspace.
        let desc =
            prometheus::core::Desc::new(name.to_owned(), help.to_owned(), Vec::new(), labels)
                .expect("valid metric");
        self.rows.push((desc, kind, Box::new(read)));
        self
    }

    /// Adds a counter (its name ends in `_total`).
    #[must_use]
    pub fn counter(
        self,
        name: &str,
        help: &str,
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        self.row(
            prometheus::proto::MetricType::COUNTER,
            name,
            help,
            &[],
            read,
        )
    }

    /// Adds a gauge.
    #[must_use]
    pub fn gauge(
        self,
        name: &str,
        help: &str,
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        self.row(prometheus::proto::MetricType::GAUGE, name, help, &[], read)
    }

    /// Adds a gauge with constant labels.
    #[must_use]
    pub fn labelled_gauge(
        self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        self.row(
            prometheus::proto::MetricType::GAUGE,
            name,
            help,
            labels,
            read,
        )
    }

    /// Adds a counter with constant labels.
    #[must_use]
    pub fn labelled_counter(
        self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        self.row(
            prometheus::proto::MetricType::COUNTER,
            name,
            help,
            labels,
            read,
        )
    }

    /// Adds these series to `registry`.
    ///
    /// # Errors
    /// A [`prometheus::Error`] when a series of the same name is registered already.
    pub fn register(self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self))
    }
}

impl prometheus::core::Collector for ReadAtScrape {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.rows.iter().map(|(desc, _, _)| desc).collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{self, MetricType};
        self.rows
            .iter()
            .filter_map(|(desc, kind, read)| {
                let value = read()?;
                let mut metric = proto::Metric::from_label(desc.const_label_pairs.clone());
                if *kind == MetricType::COUNTER {
                    let mut counter = proto::Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = proto::Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
                let mut family = proto::MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(*kind);
                family.set_metric(vec![metric]);
                Some(family)
            })
            .collect()
    }
}

/// Encodes everything `registry` holds in the Prometheus text format (0.0.4).
#[must_use]
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // An encoding error only comes from a family without samples, which gather() drops.
    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_the_queue_depth() {
        let metrics = ServiceMetrics::default();
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        let symbol = Symbol::parse("BTCUSDT").unwrap();
        metrics.preset_symbols(std::slice::from_ref(&symbol));
        metrics.trade_executed(&symbol, Side::Buy, TradeOrigin::Manual);
        metrics.trade_executed(&symbol, Side::Buy, TradeOrigin::Manual);
        metrics.trade_rejected("insufficient_funds");
        metrics.watch_engine_queue(|| 3);
        metrics.engine_command("execute", Duration::from_millis(2));
        let out = encode(&registry);
        // TC0: labelled counters, the untouched ones at zero
        assert!(out.contains("# TYPE cryptobot_trades_executed_total counter\n"));
        assert!(out.contains(
            "cryptobot_trades_executed_total{origin=\"manual\",side=\"buy\",symbol=\"BTCUSDT\"} 2\n"
        ));
        assert!(out.contains(
            "cryptobot_trades_executed_total{origin=\"auto\",side=\"sell\",symbol=\"BTCUSDT\"} 0\n"
        ));
        assert!(out.contains("cryptobot_trades_rejected_total{code=\"insufficient_funds\"} 1\n"));
        assert!(out.contains("cryptobot_trades_rejected_total{code=\"storage_error\"} 0\n"));
        assert!(out.contains("cryptobot_alerts_raised_total 0\n"));
        // TC1: the queue depth is read at scrape time
        assert!(out.contains("cryptobot_engine_queue_depth 3\n"), "{out}");
        // TC2: the histogram's bucket of 2.5 ms holds the 2 ms command
        assert!(out.contains(
            "cryptobot_engine_command_seconds_bucket{command=\"execute\",le=\"0.0025\"} 1\n"
        ));
        assert!(out.contains("cryptobot_engine_command_seconds_count{command=\"execute\"} 1\n"));
    }

    #[test]
    fn values_read_at_scrape_time_are_typed_labelled_or_left_out() {
        let registry = Registry::new();
        let value = Arc::new(std::sync::atomic::AtomicU64::new(4));
        let read = Arc::clone(&value);
        ReadAtScrape::new()
            .counter("demo_events_total", "Events.", move || {
                Some(read.load(std::sync::atomic::Ordering::Relaxed) as f64)
            })
            .labelled_gauge("demo_info", "Build.", &[("version", "1.2")], || Some(1.0))
            .gauge("demo_absent", "Never read.", || None)
            .register(&registry)
            .unwrap();
        value.store(5, std::sync::atomic::Ordering::Relaxed);
        let out = encode(&registry);
        assert!(
            out.contains("# TYPE demo_events_total counter\ndemo_events_total 5\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE demo_info gauge\ndemo_info{version=\"1.2\"} 1\n"));
        assert!(!out.contains("demo_absent"));
    }

    #[test]
    fn registering_twice_in_one_registry_fails_but_two_registries_are_independent() {
        let metrics = ServiceMetrics::default();
        let registry = Registry::new();
        metrics.register(&registry).unwrap();
        assert!(metrics.register(&registry).is_err());
        let other = ServiceMetrics::default();
        other.register(&Registry::new()).unwrap();
    }
}
