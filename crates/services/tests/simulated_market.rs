//! Black-box tests of the simulated market: feed rate in virtual time, the handle, reproducibility.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cryptobot_domain::fixtures::{dec, instant, symbol};
use cryptobot_domain::{Event, Symbol, Ticker};
use cryptobot_services::market::{MarketConfig, SimulatedMarket};
use cryptobot_services::{
    Clock, EventBus, InMemoryBus, ManualClock, MarketService, ServiceError, ServiceMetrics,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

struct Harness {
    market: SimulatedMarket,
    bus: Arc<InMemoryBus>,
    events: broadcast::Receiver<Arc<cryptobot_services::Envelope>>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
    feed: tokio::task::JoinHandle<()>,
}

/// Builds a market on a fresh bus, subscribes, and starts the feed.
fn start(config: &MarketConfig) -> Harness {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(instant()));
    let bus = Arc::new(InMemoryBus::new(1 << 20, Arc::clone(&clock)));
    let events = bus.subscribe();
    let metrics = Arc::new(ServiceMetrics::default());
    let shutdown = CancellationToken::new();
    let (market, feed) = SimulatedMarket::new(
        config,
        Arc::clone(&bus) as Arc<dyn EventBus>,
        clock,
        Arc::clone(&metrics),
        shutdown.clone(),
    );
    let feed = feed.spawn();
    Harness {
        market,
        bus,
        events,
        metrics,
        shutdown,
        feed,
    }
}

impl Harness {
    async fn stop(self) -> (Vec<Ticker>, Arc<ServiceMetrics>) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.feed)
            .await
            .expect("feed stops promptly")
            .expect("feed does not panic");
        let mut events = self.events;
        let mut tickers = Vec::new();
        while let Ok(envelope) = events.try_recv() {
            match &envelope.event {
                Event::Ticker(ticker) => tickers.push(ticker.clone()),
                other => panic!("unexpected event {other:?}"),
            }
        }
        drop(self.bus);
        (tickers, self.metrics)
    }
}

fn config(symbols: &[&str], ticks_per_second: f64) -> MarketConfig {
    MarketConfig {
        symbols: symbols.iter().map(|s| symbol(s)).collect(),
        ticks_per_second,
        ..MarketConfig::default()
    }
}

fn count(tickers: &[Ticker], name: &str) -> usize {
    tickers.iter().filter(|t| t.symbol.as_str() == name).count()
}

#[tokio::test(start_paused = true)]
async fn feed_publishes_initial_tickers_then_the_configured_rate() {
    let harness = start(&config(&["BTCUSDT", "ETHUSDT"], 3.0));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (tickers, metrics) = harness.stop().await;

    // The initial prices come first, in configuration order.
    let first: Vec<(&str, Ticker)> = tickers[..2]
        .iter()
        .map(|t| (t.symbol.as_str(), t.clone()))
        .collect();
    assert_eq!(first[0].0, "BTCUSDT");
    assert_eq!(first[0].1.price, dec("65000"));
    assert_eq!(first[1].0, "ETHUSDT");
    assert_eq!(first[1].1.price, dec("3500"));
    assert_eq!(first[0].1.updated_at, instant());

    // 3 ticks/s for 10 s of virtual time: 30 (+-1 for the boundary) after the initial one.
    for name in ["BTCUSDT", "ETHUSDT"] {
        let n = count(&tickers, name);
        assert!((30..=32).contains(&n), "{name}: {n} tickers");
    }
    assert_eq!(metrics.ticks_published.get(), tickers.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn high_rates_are_emitted_in_batches_without_losing_count() {
    let cases = [
        // TC0: 1000/s over 2 s: one tick per millisecond wake
        (1_000.0, Duration::from_secs(2), 2_000_u64),
        // TC1: 100 000/s over 0.2 s: 100 ticks per millisecond wake
        (100_000.0, Duration::from_millis(200), 20_000),
    ];
    for (rate, run_for, expected) in cases {
        let harness = start(&config(&["SOLUSDT"], rate));
        tokio::time::sleep(run_for).await;
        let (tickers, metrics) = harness.stop().await;
        let published = metrics.ticks_published.get();
        // One wake's worth of slack at the boundary, plus the initial ticker.
        let slack = (rate / 1_000.0) as u64 + 1;
        assert!(
            published.abs_diff(expected + 1) <= slack,
            "rate {rate}: {published} published, expected about {}",
            expected + 1
        );
        assert_eq!(tickers.len() as u64, published);
    }
}

#[tokio::test(start_paused = true)]
async fn slow_rates_tick_once_per_period() {
    let harness = start(&config(&["BTCUSDT"], 0.5));
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let (tickers, _) = harness.stop().await;
    // Initial ticker plus one every 2 s: at 2, 4 and 6 s.
    assert_eq!(tickers.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn handle_serves_latest_prices_and_rejects_unknown_symbols() {
    let mut cfg = config(&["XRPUSDT", "BTCUSDT", "DOGEUSDT"], 5.0);
    cfg.initial_prices = BTreeMap::from([(symbol("BTCUSDT"), dec("70000"))]);
    let harness = start(&cfg);
    let market = harness.market.clone();

    // TC0: prices are there before the feed has run at all
    assert_eq!(
        market.symbols(),
        [symbol("XRPUSDT"), symbol("BTCUSDT"), symbol("DOGEUSDT")]
    );
    let prices: Vec<(Symbol, rust_decimal::Decimal)> = market
        .tickers()
        .await
        .into_iter()
        .map(|t| (t.symbol, t.price))
        .collect();
    assert_eq!(
        prices,
        [
            (symbol("XRPUSDT"), dec("0.6")),
            (symbol("BTCUSDT"), dec("70000")),
            (symbol("DOGEUSDT"), dec("100")),
        ]
    );

    // TC1: an unconfigured symbol is unknown
    let err = market.ticker(&symbol("ETHUSDT")).await.unwrap_err();
    assert_eq!(err, ServiceError::UnknownSymbol(symbol("ETHUSDT")));
    assert_eq!(err.code(), "unknown_symbol");

    // TC2: after some ticks the handle serves the last published ticker
    tokio::time::sleep(Duration::from_secs(3)).await;
    let latest = market.ticker(&symbol("BTCUSDT")).await.unwrap();
    let all_latest = market.tickers().await;
    let (tickers, _) = harness.stop().await;
    let last_btc = tickers
        .iter()
        .rev()
        .find(|t| t.symbol.as_str() == "BTCUSDT")
        .unwrap();
    assert_eq!(&latest, last_btc);
    assert!(count(&tickers, "BTCUSDT") > 10);
    assert_eq!(all_latest.len(), 3);
    assert_eq!(all_latest[1], latest);
}

#[tokio::test(start_paused = true)]
async fn same_seed_replays_the_same_prices() {
    let mut runs = Vec::new();
    for seed in [7, 7, 8] {
        let harness = start(&MarketConfig {
            seed,
            volatility_bps: 50,
            ..config(&["BTCUSDT", "ETHUSDT"], 10.0)
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (tickers, _) = harness.stop().await;
        let prices: Vec<(String, rust_decimal::Decimal)> = tickers
            .iter()
            .map(|t| (t.symbol.to_string(), t.price))
            .take(40)
            .collect();
        assert_eq!(prices.len(), 40);
        runs.push(prices);
    }
    assert_eq!(runs[0], runs[1], "same seed, same walk");
    assert_ne!(runs[0], runs[2], "another seed, another walk");
}

#[tokio::test(start_paused = true)]
async fn symbols_take_turns_instead_of_ticking_together() {
    let names = ["BTCUSDT", "ETHUSDT", "SOLUSDT"];
    let harness = start(&config(&names, 10.0));
    // 30 steps/s: one symbol every 33 ms, not all three together every 100 ms. At 50 ms only
    // the first has moved.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(harness.metrics.ticks_published.get(), 3 + 1);
    tokio::time::sleep(Duration::from_millis(1_950)).await;
    let (tickers, _) = harness.stop().await;
    // The initial tickers, then the symbols in turn, in configuration order.
    let order: Vec<&str> = tickers[3..].iter().map(|t| t.symbol.as_str()).collect();
    assert!(order.len() >= 57, "{} steps in 2 s", order.len());
    for (i, name) in order.iter().enumerate() {
        assert_eq!(*name, names[i % 3], "step {i}");
    }
    // Each symbol still ticks at its own rate: 20 (+-1) in 2 s.
    for name in names {
        let n = count(&tickers[3..], name);
        assert!((19..=21).contains(&n), "{name}: {n} tickers");
    }
}
