//! Black-box tests of the signal engine, the auto-trader and the alert monitor on a real bus.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use cryptobot_domain::fixtures::{self, dec, instant, symbol};
use cryptobot_domain::{Alert, AlertType, Event, Severity, Signal, SignalAction};
use cryptobot_services::alerts::{AlertConfig, AlertMonitor};
use cryptobot_services::signals::{SignalConfig, SignalEngine};
use cryptobot_services::{Clock, Envelope, EventBus, InMemoryBus, ManualClock, ServiceMetrics};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Bounded wait used only as a hang guard.
const GUARD: Duration = Duration::from_secs(5);

struct World {
    clock: Arc<ManualClock>,
    bus: Arc<dyn EventBus>,
    metrics: Arc<ServiceMetrics>,
    shutdown: CancellationToken,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(instant()));
    let bus: Arc<dyn EventBus> =
        Arc::new(InMemoryBus::new(4096, Arc::clone(&clock) as Arc<dyn Clock>));
    World {
        clock,
        bus,
        metrics: Arc::new(ServiceMetrics::default()),
        shutdown: CancellationToken::new(),
    }
}

impl World {
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock) as Arc<dyn Clock>
    }

    fn ticker(&self, name: &str, price: &str) {
        self.bus
            .publish(Event::Ticker(fixtures::ticker(name, price)));
    }

    async fn stop(&self, task: tokio::task::JoinHandle<()>) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, task)
            .await
            .expect("task stops promptly")
            .expect("task does not panic");
    }
}

/// Waits (with a hang guard) for the next event that `pick` accepts.
async fn next<T>(
    events: &mut broadcast::Receiver<Arc<Envelope>>,
    pick: impl Fn(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(GUARD, async {
        loop {
            let envelope = events.recv().await.expect("bus open");
            if let Some(found) = pick(&envelope.event) {
                return found;
            }
        }
    })
    .await
    .expect("expected event arrives")
}

/// Every event `pick` accepts that is already waiting.
fn drain<T>(
    events: &mut broadcast::Receiver<Arc<Envelope>>,
    pick: impl Fn(&Event) -> Option<T>,
) -> Vec<T> {
    let mut found = Vec::new();
    while let Ok(envelope) = events.try_recv() {
        found.extend(pick(&envelope.event));
    }
    found
}

fn signal_of(event: &Event) -> Option<Signal> {
    match event {
        Event::Signal(signal) => Some(signal.clone()),
        _ => None,
    }
}

fn alert_of(event: &Event) -> Option<Alert> {
    match event {
        Event::Alert(alert) => Some(alert.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn signal_engine_emits_buy_then_sell_on_a_crossing_path() {
    let w = world();
    let mut events = w.bus.subscribe();
    let config = SignalConfig {
        enabled: true,
        short_window: 2,
        long_window: 3,
    };
    let task = SignalEngine::new(
        config,
        Arc::clone(&w.bus),
        w.clock(),
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .spawn();
    w.clock.advance(TimeDelta::seconds(30));
    // Falling (baseline: short below long), up through the long average, then down through it.
    // ETH ticks in between have their own averages and must not disturb BTC's.
    for (btc, eth) in [("10", "1"), ("9", "1"), ("8", "1"), ("12", "1"), ("3", "1")] {
        w.ticker("BTCUSDT", btc);
        w.ticker("ETHUSDT", eth);
    }

    let buy = next(&mut events, signal_of).await;
    let sell = next(&mut events, signal_of).await;
    assert_eq!(
        (buy.action, buy.price, buy.symbol.as_str()),
        (SignalAction::Buy, dec("12"), "BTCUSDT")
    );
    assert_eq!(buy.strategy, "sma_crossover");
    assert_eq!(buy.generated_at, instant() + TimeDelta::seconds(30));
    // short (8 + 12) / 2 = 10 vs long 29 / 3: gap above 1 %, so full confidence
    assert_eq!(buy.confidence, dec("1"));
    assert!(buy.reason.contains("crossed above"), "{}", buy.reason);
    assert_eq!((sell.action, sell.price), (SignalAction::Sell, dec("3")));

    w.stop(task).await;
    assert!(drain(&mut events, signal_of).is_empty(), "no other signals");
    assert_eq!(w.metrics.signals_generated.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn disabled_signal_engine_stays_quiet() {
    let w = world();
    let mut events = w.bus.subscribe();
    let config = SignalConfig {
        enabled: false,
        ..SignalConfig::default()
    };
    let task = SignalEngine::new(
        config,
        Arc::clone(&w.bus),
        w.clock(),
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .spawn();
    for price in ["10", "9", "8", "7", "6", "5", "20", "30", "40", "50"] {
        w.ticker("BTCUSDT", price);
    }
    // Paused time only advances once every task is idle: the engine had every chance to react.
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.stop(task).await;
    assert!(drain(&mut events, signal_of).is_empty());
    assert_eq!(w.metrics.signals_generated.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn silent_symbol_raises_feed_stalled_once_and_feed_resumed_after_an_update() {
    let w = world();
    let mut events = w.bus.subscribe();
    let config = AlertConfig {
        feed_stall_secs: 10,
        ..AlertConfig::default()
    };
    let task = AlertMonitor::new(
        config,
        vec![symbol("BTCUSDT"), symbol("ETHUSDT")],
        Arc::clone(&w.bus),
        w.clock(),
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .spawn();

    // BTC ticks every second for 40 s of virtual time; ETH stays silent.
    for _ in 0..40 {
        w.ticker("BTCUSDT", "100");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let alerts = drain(&mut events, alert_of);
    let kinds: Vec<(AlertType, Severity, String)> = alerts
        .iter()
        .map(|a| {
            (
                a.alert_type,
                a.severity,
                a.symbol.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [(
            AlertType::FeedStalled,
            Severity::Warning,
            "ETHUSDT".to_owned()
        )],
        "{alerts:?}"
    );

    // ETH updates again: resumed, once.
    w.ticker("ETHUSDT", "3500");
    w.ticker("ETHUSDT", "3501");
    let resumed = next(&mut events, alert_of).await;
    assert_eq!(resumed.alert_type, AlertType::FeedResumed);
    assert_eq!(resumed.severity, Severity::Info);
    assert_eq!(resumed.symbol, Some(symbol("ETHUSDT")));
    assert_eq!(resumed.raised_at, w.clock.now());

    tokio::time::sleep(Duration::from_secs(1)).await;
    w.stop(task).await;
    assert!(drain(&mut events, alert_of).is_empty());
    assert_eq!(w.metrics.alerts_raised.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn large_price_moves_raise_price_move_alerts() {
    let w = world();
    let mut events = w.bus.subscribe();
    let config = AlertConfig {
        price_move_pct: dec("5"),
        price_move_window_secs: 60,
        feed_stall_secs: 3_600,
    };
    let task = AlertMonitor::new(
        config,
        vec![symbol("BTCUSDT")],
        Arc::clone(&w.bus),
        w.clock(),
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .spawn();

    // The monitor stamps prices with the clock when it processes them, so each tick is let
    // through (paused time: the sleep returns once the monitor is idle) before the clock moves.
    let tick = |price: &'static str| {
        w.ticker("BTCUSDT", price);
        tokio::time::sleep(Duration::from_millis(1))
    };
    // TC0: +6 % within a second: info
    tick("100").await;
    w.clock.advance(TimeDelta::seconds(1));
    tick("106").await;
    let alert = next(&mut events, alert_of).await;
    assert_eq!(alert.alert_type, AlertType::PriceMove);
    assert_eq!(alert.severity, Severity::Info);
    assert_eq!(alert.symbol, Some(symbol("BTCUSDT")));
    assert_eq!(alert.raised_at, instant() + TimeDelta::seconds(1));
    assert_eq!(alert.message, "BTCUSDT rose 6.00% in 1s (100 -> 106)");

    // TC1: the window restarted at 106: a small move is quiet, a 12 % fall is a warning
    w.clock.advance(TimeDelta::seconds(1));
    tick("108").await;
    w.clock.advance(TimeDelta::seconds(1));
    tick("93.28").await;
    let alert = next(&mut events, alert_of).await;
    assert_eq!(alert.severity, Severity::Warning);
    assert!(
        alert.message.starts_with("BTCUSDT fell 12.00% in 2s"),
        "{}",
        alert.message
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    w.stop(task).await;
    assert!(drain(&mut events, alert_of).is_empty());
    assert_eq!(w.metrics.alerts_raised.get(), 2);
}

#[cfg(feature = "mocks")]
mod auto_trader {
    use cryptobot_domain::{
        BotState, OrderSize, PortfolioSummary, Position, PositionValuation, Side, TradeOrigin,
        TradeRequest, TradingState,
    };
    use cryptobot_services::signals::AutoTrader;
    use cryptobot_services::trading::{MockPortfolioService, MockTradeService, TradingConfig};
    use cryptobot_services::{Execution, PortfolioService, ServiceError, TradeService};
    use rust_decimal::Decimal;
    use tokio::sync::mpsc;

    use super::*;

    fn signal(name: &str, action: SignalAction) -> Event {
        Event::Signal(Signal {
            symbol: symbol(name),
            action,
            strategy: "sma_crossover".to_owned(),
            price: dec("100"),
            confidence: dec("0.5"),
            reason: "test".to_owned(),
            generated_at: instant(),
        })
    }

    /// The client order id the auto-trader gives the `seq`-th signal built by [`signal`].
    fn auto_id(symbol: &str, seq: u64) -> String {
        format!("auto-{symbol}-{}-{seq}", instant().timestamp_micros())
    }

    fn holding(name: &str, quantity: &str) -> PortfolioSummary {
        let position = Position {
            symbol: symbol(name),
            quantity: dec(quantity),
            avg_entry_price: dec("100"),
            cost_basis: dec(quantity) * dec("100"),
            stop_loss: None,
            take_profit: None,
        };
        PortfolioSummary::new(
            dec("1000"),
            vec![PositionValuation::new(position, dec("100"))],
            Decimal::ZERO,
            Decimal::ZERO,
            1,
            instant(),
        )
    }

    fn request(name: &str, side: Side, size: OrderSize, id: &str) -> TradeRequest {
        TradeRequest::new(
            symbol(name),
            side,
            size,
            Some(cryptobot_domain::ClientOrderId::parse(id).unwrap()),
            TradeOrigin::Auto,
        )
        .unwrap()
    }

    /// A trade service that reports every request on a channel; the first call is rejected to
    /// show the auto-trader carries on after an error.
    fn recording_trade_service() -> (MockTradeService, mpsc::UnboundedReceiver<TradeRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut trade = MockTradeService::new();
        trade
            .expect_bot_state()
            .returning(|| Ok(BotState::initial(TradingState::Running)));
        let mut calls = 0;
        trade
            .expect_execute()
            .returning(move |request: TradeRequest| {
                calls += 1;
                tx.send(request.clone()).unwrap();
                if calls == 1 {
                    return Err(ServiceError::InsufficientFunds {
                        needed: dec("100.1"),
                        available: dec("50"),
                    });
                }
                Ok(Execution {
                    trade: fixtures::trade(calls, request.symbol().as_str(), "100", "1"),
                    replayed: false,
                })
            });
        (trade, rx)
    }

    async fn next_request(rx: &mut mpsc::UnboundedReceiver<TradeRequest>) -> TradeRequest {
        tokio::time::timeout(GUARD, rx.recv())
            .await
            .expect("a trade request arrives")
            .expect("mock alive")
    }

    #[tokio::test]
    async fn auto_trader_buys_on_buy_and_sells_the_position_on_sell() {
        let w = world();
        let (trade, mut requests) = recording_trade_service();
        let mut portfolio = MockPortfolioService::new();
        portfolio
            .expect_summary()
            .returning(|| Ok(holding("BTCUSDT", "0.5")));
        let config = TradingConfig {
            auto_trade: true,
            auto_trade_amount: dec("250"),
            ..TradingConfig::default()
        };
        let task = AutoTrader::new(
            &config,
            &*w.bus,
            Arc::new(trade) as Arc<dyn TradeService>,
            Arc::new(portfolio) as Arc<dyn PortfolioService>,
            w.shutdown.clone(),
        )
        .spawn();

        // Signals 1..=5 on the signals channel; tickers in between are ignored.
        w.bus.publish(signal("BTCUSDT", SignalAction::Buy));
        w.ticker("BTCUSDT", "100");
        w.bus.publish(signal("BTCUSDT", SignalAction::Buy));
        w.bus.publish(signal("BTCUSDT", SignalAction::Sell));
        w.bus.publish(signal("ETHUSDT", SignalAction::Sell));
        w.bus.publish(signal("ETHUSDT", SignalAction::Hold));
        w.bus.publish(signal("ETHUSDT", SignalAction::Buy));

        let amount = OrderSize::Amount(dec("250"));
        // TC0: the first buy is rejected by the mock ...
        assert_eq!(
            next_request(&mut requests).await,
            request("BTCUSDT", Side::Buy, amount, &auto_id("BTCUSDT", 1))
        );
        // TC1: ... and the loop carries on with the next one
        assert_eq!(
            next_request(&mut requests).await,
            request("BTCUSDT", Side::Buy, amount, &auto_id("BTCUSDT", 2))
        );
        // TC2: a sell sells the whole position
        assert_eq!(
            next_request(&mut requests).await,
            request(
                "BTCUSDT",
                Side::Sell,
                OrderSize::Quantity(dec("0.5")),
                &auto_id("BTCUSDT", 3)
            )
        );
        // TC3: no ETH position, so the ETH sell (4) and the hold (5) trade nothing; the next
        // request is the ETH buy (6)
        assert_eq!(
            next_request(&mut requests).await,
            request("ETHUSDT", Side::Buy, amount, &auto_id("ETHUSDT", 6))
        );

        w.stop(task).await;
        assert!(requests.try_recv().is_err(), "no further trades");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_auto_trader_never_trades() {
        let w = world();
        let mut trade = MockTradeService::new();
        trade
            .expect_bot_state()
            .times(2)
            .returning(|| Ok(BotState::initial(TradingState::Paused)));
        trade.expect_execute().never();
        let mut portfolio = MockPortfolioService::new();
        portfolio.expect_summary().never();
        let off = TradingConfig::default();
        let task = AutoTrader::new(
            &off,
            &*w.bus,
            Arc::new(trade) as Arc<dyn TradeService>,
            Arc::new(portfolio) as Arc<dyn PortfolioService>,
            w.shutdown.clone(),
        )
        .spawn();
        w.bus.publish(signal("BTCUSDT", SignalAction::Buy));
        w.bus.publish(signal("BTCUSDT", SignalAction::Sell));
        // Paused time only advances once every task is idle: a call would have happened by now
        // (and panicked the task, which `stop` reports).
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.stop(task).await;
    }
}
