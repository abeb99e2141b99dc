//! Black-box tests of the paper trading engine on a real bus, a manual clock, a hand-written
//! market and SQLite storage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptobot_domain::fixtures::{self, dec, instant, symbol};
use cryptobot_domain::{
    AlertType, ClientOrderId, DomainError, Event, LevelChange, OrderSize, PortfolioSummary,
    PositionUpdate, Severity, Side, Symbol, Ticker, Trade, TradeOrigin, TradeRequest,
};
use cryptobot_services::trading::{PaperTrading, Storage, TradingConfig};
use cryptobot_services::{
    Clock, Envelope, EventBus, InMemoryBus, ManualClock, MarketService, PortfolioService,
    ServiceError, ServiceMetrics, TradeService,
};
use rust_decimal::Decimal;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

include!("support/paper_harness.rs");

#[cfg(feature = "postgres")]
#[path = "../src/trading/storage/needs_postgres.rs"]
mod needs_postgres;

#[tokio::test]
async fn order_becomes_trade_and_portfolio() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");

    let execution = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("2"), None)))
        .await
        .unwrap();
    assert!(!execution.replayed);
    let trade = execution.trade;
    assert_eq!(
        trade,
        Trade {
            id: 1,
            symbol: symbol("BTCUSDT"),
            side: Side::Buy,
            price: dec("100"),
            quantity: dec("2"),
            fee: dec("0.2"),
            notional: dec("200"),
            realized_pnl: dec("-0.2"),
            executed_at: instant(),
            client_order_id: None,
            origin: TradeOrigin::Manual,
        }
    );

    w.price("BTCUSDT", "110");
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(summary.cash, dec("9799.8"));
    assert_eq!(summary.positions.len(), 1);
    let valued = &summary.positions[0];
    assert_eq!(valued.position.quantity, dec("2"));
    assert_eq!(valued.position.cost_basis, dec("200"));
    assert_eq!(valued.market_price, dec("110"));
    assert_eq!(valued.unrealized_pnl, dec("20"));
    assert_eq!(summary.total_value, dec("10019.8"));
    assert_eq!((summary.trade_count, summary.fees_paid), (1, dec("0.2")));
    assert_books_balance(&summary);

    // Sell half by amount at 110: removes half the cost basis.
    let sold = guarded(trading.execute(order(
        Side::Sell,
        "BTCUSDT",
        OrderSize::Amount(dec("110")),
        None,
    )))
    .await
    .unwrap()
    .trade;
    assert_eq!((sold.id, sold.quantity), (2, dec("1")));
    assert_eq!(sold.realized_pnl, dec("110") - dec("100") - dec("0.11"));
    let summary = guarded(trading.summary()).await.unwrap();
    assert_books_balance(&summary);

    let recent = guarded(trading.recent_trades(10)).await.unwrap();
    assert_eq!(recent, [sold.clone(), trade]);
    // TC0: limit 0 is clamped to 1
    assert_eq!(guarded(trading.recent_trades(0)).await.unwrap(), [sold]);
    assert_eq!(w.count(&w.metrics.trades_executed), 2);
    w.stop(task).await;
}

#[tokio::test]
async fn events_are_published_in_order_after_the_trade() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("ETHUSDT", "2000");
    let mut events = w.bus.subscribe();

    let trade = guarded(trading.execute(order(
        Side::Buy,
        "ETHUSDT",
        OrderSize::Amount(dec("100.1")),
        None,
    )))
    .await
    .unwrap()
    .trade;
    assert_eq!(trade.quantity, dec("0.05"));
    let published = drain(&mut events);
    assert_eq!(published.len(), 2, "{published:?}");
    assert_eq!(published[0], Event::TradeExecuted(trade));
    let Event::PortfolioChanged(summary) = &published[1] else {
        panic!("expected a portfolio change, got {:?}", published[1]);
    };
    assert_eq!(summary.cash, dec("10000") - dec("100.1"));
    assert_eq!(summary.positions[0].position.quantity, dec("0.05"));
    w.stop(task).await;
}

#[tokio::test]
async fn rejected_trades_publish_alerts_and_change_nothing() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    let mut events = w.bus.subscribe();
    let before = guarded(trading.summary()).await.unwrap();

    let cases = [
        // TC0: more than the cash
        (
            order(Side::Buy, "BTCUSDT", qty("100"), None),
            "buy BTCUSDT rejected: insufficient funds: need 10010, have 10000",
        ),
        // TC1: nothing to sell
        (
            order(Side::Sell, "BTCUSDT", qty("1"), None),
            "sell BTCUSDT rejected: insufficient position: cannot sell 1, holding 0",
        ),
        // TC2: not traded here
        (
            order(Side::Buy, "DOGEUSDT", qty("1"), None),
            "buy DOGEUSDT rejected: unknown symbol DOGEUSDT",
        ),
        // TC3: no price yet
        (
            order(Side::Buy, "ETHUSDT", qty("1"), None),
            "buy ETHUSDT rejected: no price yet for ETHUSDT",
        ),
        // TC4: below the minimum notional
        (
            order(Side::Buy, "BTCUSDT", qty("0.001"), None),
            "buy BTCUSDT rejected: order too small: notional 0.1 is below the minimum 1",
        ),
    ];
    for (request, message) in &cases {
        let err = guarded(trading.execute(request.clone())).await.unwrap_err();
        let published = drain(&mut events);
        assert_eq!(published.len(), 1, "{published:?}");
        let Event::Alert(alert) = &published[0] else {
            panic!("expected an alert, got {:?}", published[0]);
        };
        assert_eq!(alert.alert_type, AlertType::TradeRejected);
        assert_eq!(alert.severity, Severity::Warning);
        assert_eq!(alert.message, *message, "error was {err}");
        assert_eq!(alert.symbol, Some(request.symbol().clone()));
    }
    assert_eq!(w.count(&w.metrics.trades_rejected), cases.len() as u64);
    assert_eq!(w.count(&w.metrics.trades_executed), 0);
    assert_eq!(guarded(trading.summary()).await.unwrap(), before);
    assert!(guarded(trading.recent_trades(10)).await.unwrap().is_empty());
    w.stop(task).await;
}

#[tokio::test]
async fn repeated_client_order_id_returns_the_original_trade() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    let first = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.1"), Some("web-1"))))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(
        first.trade.client_order_id.as_ref().unwrap().as_str(),
        "web-1"
    );

    // The price moved, but a repeat (same value, other spelling) gets the original trade.
    w.price("BTCUSDT", "120");
    let mut events = w.bus.subscribe();
    let repeat = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.10"), Some("web-1"))))
        .await
        .unwrap();
    assert!(repeat.replayed);
    assert_eq!(repeat.trade, first.trade);
    assert!(drain(&mut events).is_empty(), "a replay publishes nothing");
    assert_eq!(w.count(&w.metrics.trades_replayed), 1);

    // Same id, different order.
    let mismatches = [
        // TC0: other size
        order(Side::Buy, "BTCUSDT", qty("0.2"), Some("web-1")),
        // TC1: other size kind
        order(
            Side::Buy,
            "BTCUSDT",
            OrderSize::Amount(dec("0.1")),
            Some("web-1"),
        ),
        // TC2: other side
        order(Side::Sell, "BTCUSDT", qty("0.1"), Some("web-1")),
        // TC3: other symbol
        order(Side::Buy, "ETHUSDT", qty("0.1"), Some("web-1")),
    ];
    for request in mismatches {
        let err = guarded(trading.execute(request)).await.unwrap_err();
        assert_eq!(
            err,
            ServiceError::DuplicateClientOrderId(ClientOrderId::parse("web-1").unwrap())
        );
    }
    let trades = guarded(trading.recent_trades(10)).await.unwrap();
    assert_eq!(trades, [first.trade]);
    assert_eq!(w.count(&w.metrics.trades_executed), 1);
    w.stop(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_client_order_id_execute_once() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    let request = order(Side::Buy, "BTCUSDT", qty("0.5"), Some("burst-1"));

    let callers: Vec<_> = (0..64)
        .map(|_| {
            let trading = trading.clone();
            let request = request.clone();
            tokio::spawn(async move { trading.execute(request).await })
        })
        .collect();
    let mut executions = Vec::new();
    for caller in callers {
        executions.push(guarded(caller).await.unwrap().unwrap());
    }

    let fresh: Vec<_> = executions.iter().filter(|e| !e.replayed).collect();
    assert_eq!(fresh.len(), 1, "exactly one caller executes");
    assert!(executions.iter().all(|e| e.trade == fresh[0].trade));
    assert_eq!(guarded(trading.recent_trades(100)).await.unwrap().len(), 1);
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(summary.positions[0].position.quantity, dec("0.5"));
    assert_eq!(w.count(&w.metrics.trades_executed), 1);
    assert_eq!(w.count(&w.metrics.trades_replayed), 63);
    w.stop(task).await;
}

#[tokio::test]
async fn restart_from_the_same_file_keeps_cash_positions_and_trades() {
    let db = TempDb::new("restart");
    restart_keeps_the_books(&|| Storage::open(db.path()).unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn restart_on_postgres_keeps_cash_positions_and_trades() {
    let Some(schema) = needs_postgres::TestSchema::create("restart_on_postgres") else {
        return;
    };
    restart_keeps_the_books(&|| Storage::open_postgres(&schema.url()).unwrap()).await;
}

/// An engine trades on a database, stops, and a new engine on the same database carries on
/// with the same books, trade log and idempotency records.
async fn restart_keeps_the_books(open: &dyn Fn() -> Storage) {
    let w = world();
    w.price("BTCUSDT", "100");
    w.price("ETHUSDT", "2000");
    let (trading, task) = w.start(open());
    for request in [
        order(Side::Buy, "BTCUSDT", qty("3"), Some("a-1")),
        order(Side::Buy, "ETHUSDT", qty("0.25"), None),
        order(Side::Sell, "BTCUSDT", qty("1"), Some("a-2")),
    ] {
        guarded(trading.execute(request)).await.unwrap();
    }
    let levels = PositionUpdate {
        stop_loss: LevelChange::Set(dec("50")),
        take_profit: LevelChange::Set(dec("300")),
    };
    guarded(trading.update_position(symbol("BTCUSDT"), levels))
        .await
        .unwrap();
    let before = guarded(trading.summary()).await.unwrap();
    let trades_before = guarded(trading.recent_trades(10)).await.unwrap();
    w.stop(task).await;
    assert!(matches!(
        trading.summary().await,
        Err(ServiceError::Unavailable(_))
    ));
    drop(trading);

    let w2 = world();
    w2.price("BTCUSDT", "100");
    w2.price("ETHUSDT", "2000");
    let (trading, task) = w2.start(open());
    let after = guarded(trading.summary()).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.positions[0].position.stop_loss, Some(dec("50")));
    assert_books_balance(&after);
    assert_eq!(
        guarded(trading.recent_trades(10)).await.unwrap(),
        trades_before
    );

    // Idempotency survives the restart; new trades continue the ids.
    let repeat = guarded(trading.execute(order(Side::Sell, "BTCUSDT", qty("1"), Some("a-2"))))
        .await
        .unwrap();
    assert!(repeat.replayed);
    assert_eq!(repeat.trade, trades_before[0]);
    let fourth = guarded(trading.execute(order(Side::Sell, "BTCUSDT", qty("1"), Some("a-3"))))
        .await
        .unwrap();
    assert_eq!((fourth.replayed, fourth.trade.id), (false, 4));

    // The successor watches the stored stop-loss: a price below it sells the rest.
    let mut events = w2.bus.subscribe();
    w2.tick("BTCUSDT", "45");
    let stopped = next(&mut events, |event| match event {
        Event::TradeExecuted(trade) => Some(trade.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (stopped.origin, stopped.side, stopped.quantity),
        (TradeOrigin::StopLoss, Side::Sell, dec("1"))
    );
    w2.stop(task).await;
}

#[tokio::test]
async fn an_engine_started_on_the_same_file_fences_the_running_one() {
    let db = TempDb::new("fence");
    a_second_engine_fences_the_first(&|| Storage::open(db.path()).unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn an_engine_started_on_the_same_postgres_fences_the_running_one() {
    let Some(schema) = needs_postgres::TestSchema::create("engine_fence_on_postgres") else {
        return;
    };
    a_second_engine_fences_the_first(&|| Storage::open_postgres(&schema.url()).unwrap()).await;
}

/// Two engines on one database (a paused former engine and its successor): once the second
/// started, the first commits nothing and answers `engine_fenced`; the second serves.
async fn a_second_engine_fences_the_first(open: &dyn Fn() -> Storage) {
    let w = world();
    w.price("BTCUSDT", "100");
    let (old, old_task) = w.start(open());
    guarded(old.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("f-1"))))
        .await
        .unwrap();
    let w2 = world();
    w2.price("BTCUSDT", "100");
    let (new, new_task) = w2.start(open());
    let err = guarded(old.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("f-2"))))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Fenced { .. }), "{err:?}");
    assert_eq!(err.code(), "engine_fenced");
    assert!(!err.is_client_error());
    // The readiness probe of the old engine fails too.
    assert!(matches!(
        guarded(old.probe_storage()).await,
        Err(ServiceError::Fenced { .. })
    ));
    // Nothing of the refused trade is anywhere; the retry on the new engine executes it once.
    let trades = guarded(new.recent_trades(10)).await.unwrap();
    assert_eq!(trades.len(), 1);
    let retry = guarded(new.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("f-2"))))
        .await
        .unwrap();
    assert!(!retry.replayed);
    let summary = guarded(new.summary()).await.unwrap();
    assert_eq!(summary.positions[0].position.quantity, dec("2"));
    assert_books_balance(&summary);
    w.stop(old_task).await;
    w2.stop(new_task).await;
}

#[tokio::test]
async fn stop_loss_sells_exactly_once_when_the_price_crosses_back_and_forth() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    w.price("ETHUSDT", "2000");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    guarded(trading.execute(order(Side::Buy, "ETHUSDT", qty("0.01"), None)))
        .await
        .unwrap();
    guarded(trading.update_position(
        symbol("BTCUSDT"),
        PositionUpdate {
            stop_loss: LevelChange::Set(dec("90")),
            ..PositionUpdate::default()
        },
    ))
    .await
    .unwrap();
    guarded(trading.update_position(
        symbol("ETHUSDT"),
        PositionUpdate {
            take_profit: LevelChange::Set(dec("2500")),
            ..PositionUpdate::default()
        },
    ))
    .await
    .unwrap();
    let mut events = w.bus.subscribe();

    w.tick("BTCUSDT", "95");
    w.tick("BTCUSDT", "89");
    let first = collect_until(&mut events, |event| {
        matches!(event, Event::Alert(alert) if alert.alert_type == AlertType::StopLossTriggered)
    })
    .await;
    assert_eq!(
        alerts_of(&first, AlertType::StopLossTriggered)[0].0,
        Severity::Warning
    );
    // Back up, down through the level again, and further down.
    for price in ["95", "85", "91", "80"] {
        w.tick("BTCUSDT", price);
    }
    // The engine reads tickers in order: once the ETH take-profit fired, every BTC ticker before
    // it was handled.
    w.tick("ETHUSDT", "2600");
    let seen = collect_until(&mut events, is_take_profit_alert).await;
    assert!(
        alerts_of(&seen, AlertType::StopLossTriggered).is_empty(),
        "{seen:?}"
    );
    let executed = seen
        .iter()
        .filter(|e| matches!(e, Event::TradeExecuted(_)))
        .count();
    assert_eq!(executed, 1, "only the sentinel take-profit");

    let trades = guarded(trading.recent_trades(10)).await.unwrap();
    let stop_loss_trades: Vec<&Trade> = trades
        .iter()
        .filter(|t| t.origin == TradeOrigin::StopLoss)
        .collect();
    assert_eq!(stop_loss_trades.len(), 1, "{trades:?}");
    let sold = stop_loss_trades[0];
    assert_eq!(
        (
            sold.side,
            sold.quantity,
            sold.price,
            sold.client_order_id.clone()
        ),
        (Side::Sell, dec("1"), dec("89"), None)
    );
    assert_eq!(sold.realized_pnl, dec("89") - dec("100") - dec("0.089"));
    let take_profit = trades
        .iter()
        .find(|t| t.origin == TradeOrigin::TakeProfit)
        .unwrap();
    assert_eq!(
        (take_profit.quantity, take_profit.price),
        (dec("0.01"), dec("2600"))
    );

    let summary = guarded(trading.summary()).await.unwrap();
    assert!(summary.positions.is_empty());
    assert_books_balance(&summary);
    assert_eq!(w.count(&w.metrics.trades_executed), 4);
    w.stop(task).await;
}

#[tokio::test]
async fn stop_loss_alert_names_symbol_level_price_and_quantity() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.5"), None)))
        .await
        .unwrap();
    guarded(trading.update_position(
        symbol("BTCUSDT"),
        PositionUpdate {
            stop_loss: LevelChange::Set(dec("90")),
            ..PositionUpdate::default()
        },
    ))
    .await
    .unwrap();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "88");
    let (trade, alert) = (
        next(&mut events, |event| match event {
            Event::TradeExecuted(trade) => Some(trade.clone()),
            _ => None,
        })
        .await,
        next(&mut events, |event| match event {
            Event::Alert(alert) => Some(alert.clone()),
            _ => None,
        })
        .await,
    );
    assert_eq!(trade.origin, TradeOrigin::StopLoss);
    assert_eq!(alert.alert_type, AlertType::StopLossTriggered);
    assert_eq!(alert.severity, Severity::Warning);
    assert_eq!(alert.symbol, Some(symbol("BTCUSDT")));
    assert_eq!(
        alert.message,
        "stop-loss 90 of BTCUSDT crossed at price 88: sold 0.5 at 88"
    );
    w.stop(task).await;
}

#[tokio::test]
async fn failed_stop_loss_sell_raises_a_critical_alert_and_clears_the_level() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    w.price("ETHUSDT", "2000");
    // 0.015 BTC is worth 1.5 now, but below the minimum notional of 1 at 60.
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.015"), None)))
        .await
        .unwrap();
    guarded(trading.execute(order(Side::Buy, "ETHUSDT", qty("0.01"), None)))
        .await
        .unwrap();
    for (name, update) in [
        (
            "BTCUSDT",
            PositionUpdate {
                stop_loss: LevelChange::Set(dec("70")),
                take_profit: LevelChange::Set(dec("200")),
            },
        ),
        (
            "ETHUSDT",
            PositionUpdate {
                take_profit: LevelChange::Set(dec("2500")),
                ..PositionUpdate::default()
            },
        ),
    ] {
        guarded(trading.update_position(symbol(name), update))
            .await
            .unwrap();
    }
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "60");
    let first = collect_until(&mut events, |event| matches!(event, Event::Alert(_))).await;
    let stop_alerts = alerts_of(&first, AlertType::StopLossTriggered);
    assert_eq!(stop_alerts.len(), 1, "{first:?}");
    let (severity, message) = &stop_alerts[0];
    assert_eq!(*severity, Severity::Critical);
    assert_eq!(
        message,
        "stop-loss 70 of BTCUSDT crossed at price 60 but selling 0.015 failed: order too small: \
         notional 0.9 is below the minimum 1; the level is cleared"
    );
    // Still below the (cleared) level: no retry on later tickers.
    for price in ["50", "40"] {
        w.tick("BTCUSDT", price);
    }
    w.tick("ETHUSDT", "2600");
    let seen = collect_until(&mut events, is_take_profit_alert).await;
    assert!(
        alerts_of(&seen, AlertType::StopLossTriggered).is_empty(),
        "{seen:?}"
    );
    assert!(alerts_of(&seen, AlertType::TradeRejected).is_empty());
    let summary = guarded(trading.summary()).await.unwrap();
    let btc = &summary.positions[0].position;
    assert_eq!(btc.symbol, symbol("BTCUSDT"));
    assert_eq!((btc.stop_loss, btc.take_profit), (None, Some(dec("200"))));
    assert_eq!(btc.quantity, dec("0.015"));
    assert_eq!(w.count(&w.metrics.trades_rejected), 1);
    w.stop(task).await;
}

#[tokio::test]
async fn lagging_behind_the_bus_is_counted_and_harmless() {
    let w = world_with_bus_capacity(8);
    let (trading, task) = w.start_in_memory();
    w.price("ETHUSDT", "2000");
    guarded(trading.execute(order(Side::Buy, "ETHUSDT", qty("0.01"), None)))
        .await
        .unwrap();
    let take_profit = PositionUpdate {
        take_profit: LevelChange::Set(dec("2500")),
        ..PositionUpdate::default()
    };
    guarded(trading.update_position(symbol("ETHUSDT"), take_profit))
        .await
        .unwrap();
    // The current-thread runtime does not run the engine until this test awaits, so it falls
    // more than the bus capacity behind; the newest tickers, the trigger among them, survive.
    for _ in 0..20 {
        w.tick("BTCUSDT", "100");
    }
    w.tick("ETHUSDT", "2600");
    let mut events = w.bus.subscribe();
    let seen = collect_until(&mut events, is_take_profit_alert).await;
    assert_eq!(alerts_of(&seen, AlertType::TakeProfitTriggered).len(), 1);
    assert!(w.count(&w.metrics.bus_lagged_events) > 0);
    assert!(
        guarded(trading.summary())
            .await
            .unwrap()
            .positions
            .is_empty()
    );
    w.stop(task).await;
}

#[tokio::test]
async fn update_position_validates_persists_and_publishes() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.price("BTCUSDT", "100");
    let err = guarded(trading.update_position(symbol("BTCUSDT"), PositionUpdate::default()))
        .await
        .unwrap_err();
    assert_eq!(err, ServiceError::NoPosition(symbol("BTCUSDT")));

    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    let inverted = PositionUpdate {
        stop_loss: LevelChange::Set(dec("120")),
        take_profit: LevelChange::Set(dec("110")),
    };
    let err = guarded(trading.update_position(symbol("BTCUSDT"), inverted))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Domain(DomainError::InvalidLevels(_))
    ));

    let mut events = w.bus.subscribe();
    let set = PositionUpdate {
        stop_loss: LevelChange::Set(dec("80")),
        ..PositionUpdate::default()
    };
    let position = guarded(trading.update_position(symbol("BTCUSDT"), set))
        .await
        .unwrap();
    assert_eq!(position.stop_loss, Some(dec("80")));
    assert_eq!(position.quantity, dec("1"));
    let published = drain(&mut events);
    assert_eq!(published.len(), 1);
    let Event::PortfolioChanged(summary) = &published[0] else {
        panic!("expected a portfolio change");
    };
    assert_eq!(summary.positions[0].position.stop_loss, Some(dec("80")));
    // Update errors are not trade rejections.
    assert_eq!(w.count(&w.metrics.trades_rejected), 0);
    w.stop(task).await;
}

#[tokio::test]
async fn failed_commit_changes_nothing_in_memory() {
    let db = TempDb::new("failed-commit");
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start(Storage::open(db.path()).unwrap());
    let raw = db.raw();
    raw.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON trades \
         BEGIN SELECT RAISE(ABORT, 'disk is full'); END;",
    )
    .unwrap();
    let before = guarded(trading.summary()).await.unwrap();
    let mut events = w.bus.subscribe();

    let err = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("c-1"))))
        .await
        .unwrap_err();
    assert!(matches!(&err, ServiceError::Storage(detail) if detail.contains("disk is full")));
    assert_eq!(guarded(trading.summary()).await.unwrap(), before);
    let published = drain(&mut events);
    assert_eq!(alerts_of(&published, AlertType::TradeRejected).len(), 1);
    assert!(
        !published
            .iter()
            .any(|e| matches!(e, Event::TradeExecuted(_) | Event::PortfolioChanged(_)))
    );

    raw.execute_batch("DROP TRIGGER refuse;").unwrap();
    let retried = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("c-1"))))
        .await
        .unwrap();
    assert!(!retried.replayed, "the failed attempt left no record");
    assert_eq!(retried.trade.id, 1);
    w.stop(task).await;
}

#[tokio::test]
async fn books_that_disagree_with_the_trade_log_refuse_to_start() {
    let db = TempDb::new("unbalanced");
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start(Storage::open(db.path()).unwrap());
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    w.stop(task).await;

    db.raw()
        .execute_batch("UPDATE positions SET quantity = '2';")
        .unwrap();
    let w2 = world();
    let err = w2.try_start(Storage::open(db.path()).unwrap()).unwrap_err();
    assert!(
        matches!(&err, ServiceError::Storage(detail) if detail.starts_with("books do not balance")),
        "{err}"
    );
}

#[tokio::test]
async fn stopped_engine_is_unavailable() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.stop(task).await;
    let stopped = ServiceError::Unavailable("paper trading engine stopped".into());
    assert_eq!(
        trading
            .execute(order(Side::Buy, "BTCUSDT", qty("1"), None))
            .await
            .unwrap_err(),
        stopped
    );
    assert_eq!(trading.recent_trades(1).await.unwrap_err(), stopped);
    assert_eq!(w.count(&w.metrics.trades_rejected), 0);
}

#[tokio::test]
async fn engine_stops_when_every_handle_is_dropped() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    let copy = trading.clone();
    drop(trading);
    drop(copy);
    guarded(task).await.unwrap();
}

#[tokio::test]
async fn invalid_config_is_refused_at_spawn() {
    let w = world();
    let err = PaperTrading::spawn(
        TradingConfig {
            fee_rate: Decimal::ONE,
            ..TradingConfig::default()
        },
        Storage::open(":memory:").unwrap(),
        Arc::clone(&w.market) as Arc<dyn MarketService>,
        Arc::clone(&w.bus),
        Arc::clone(&w.clock) as Arc<dyn Clock>,
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("fee_rate"), "{err}");
}

#[tokio::test]
async fn a_successor_first_publishes_the_trades_its_predecessor_committed_but_never_published() {
    let db = TempDb::new("republish");
    let first = world();
    let (trading, task) = first.start(Storage::open(db.path()).unwrap());
    first.price("BTCUSDT", "100");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let execution = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
            .await
            .unwrap();
        ids.push(execution.trade.id);
    }
    first.stop(task).await;

    // The predecessor's last trade on the stream was the first one: two more were committed.
    let clock = Arc::new(ManualClock::new(instant()));
    let bus = Arc::new(ContinuedBus {
        inner: InMemoryBus::new(64, Arc::clone(&clock) as Arc<dyn Clock>),
        inherited: cryptobot_services::Inherited {
            last_trade: ids[0],
            ..Default::default()
        },
    });
    let mut events = bus.subscribe();
    let second = World {
        bus: Arc::clone(&bus) as Arc<dyn EventBus>,
        clock,
        ..world()
    };
    second.price("BTCUSDT", "100");
    let (_trading, task) = second.start(Storage::open(db.path()).unwrap());

    // TC0: before anything else, the two unpublished trades in id order, then the portfolio.
    let seen = collect_until(&mut events, |event| {
        matches!(event, Event::PortfolioChanged(_))
    })
    .await;
    let Some(Event::PortfolioChanged(summary)) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(summary.trade_count, 3, "{summary:?}");
    let republished: Vec<u64> = seen
        .iter()
        .filter_map(|event| match event {
            Event::TradeExecuted(trade) => Some(trade.id),
            _ => None,
        })
        .collect();
    assert_eq!(republished, ids[1..]);
    assert_eq!(seen.len(), 3, "{seen:?}");
    second.stop(task).await;
}

/// A storage whose next trade commit lands but answers an error, as a PostgreSQL connection that
/// breaks between `COMMIT` and its reply: everything else goes to the real storage inside.
#[derive(Debug)]
struct LosesOneAnswer {
    inner: Storage,
    armed: std::sync::atomic::AtomicBool,
}

impl LosesOneAnswer {
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The test keeps a handle to arm it; the engine gets the other.
#[derive(Debug)]
struct SharedLosesOneAnswer(Arc<LosesOneAnswer>);

impl std::ops::Deref for SharedLosesOneAnswer {
    type Target = LosesOneAnswer;
    fn deref(&self) -> &LosesOneAnswer {
        &self.0
    }
}

mod loses_one_answer {
    use cryptobot_domain::{
        Candle, ClientOrderId, Interval, Order, OrderPage, OrderQuery, OrderSize, Position, Symbol,
        Trade, TradePage, TradeQuery,
    };
    use cryptobot_services::ServiceError;
    use cryptobot_services::trading::{Account, StorageBackend, StoredTrade};

    use super::SharedLosesOneAnswer;

    type Result<T> = std::result::Result<T, ServiceError>;

    impl StorageBackend for SharedLosesOneAnswer {
        fn load_account(&self) -> Result<Option<Account>> {
            self.inner.load_account()
        }
        fn init_account(&self, account: &Account) -> Result<()> {
            self.inner.init_account(account)
        }
        fn load_positions(&self) -> Result<Vec<Position>> {
            self.inner.load_positions()
        }
        fn load_trades(&self) -> Result<Vec<Trade>> {
            self.inner.load_trades()
        }
        fn trades(&self, query: &TradeQuery) -> Result<TradePage> {
            self.inner.trades(query)
        }
        fn find_by_client_order_id(&self, id: &ClientOrderId) -> Result<Option<StoredTrade>> {
            self.inner.find_by_client_order_id(id)
        }
        fn commit_fill(
            &self,
            trade: &Trade,
            size: OrderSize,
            position: Option<&Position>,
            account: &Account,
            order: Option<&Order>,
        ) -> Result<()> {
            self.inner
                .commit_fill(trade, size, position, account, order)?;
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(ServiceError::Storage(
                    "connection lost after COMMIT was sent".into(),
                ));
            }
            Ok(())
        }
        fn save_orders(&self, orders: &[Order]) -> Result<()> {
            self.inner.save_orders(orders)
        }
        fn load_open_orders(&self) -> Result<Vec<Order>> {
            self.inner.load_open_orders()
        }
        fn last_order_id(&self) -> Result<u64> {
            self.inner.last_order_id()
        }
        fn find_order_by_client_order_id(&self, id: &ClientOrderId) -> Result<Option<Order>> {
            self.inner.find_order_by_client_order_id(id)
        }
        fn find_order(&self, id: u64) -> Result<Option<Order>> {
            self.inner.find_order(id)
        }
        fn orders(&self, query: &OrderQuery) -> Result<OrderPage> {
            self.inner.orders(query)
        }
        fn daily_profit(
            &self,
            since: chrono::NaiveDate,
        ) -> Result<Vec<cryptobot_domain::DailyProfit>> {
            self.inner.daily_profit(since)
        }
        fn probe_write(&self, at: chrono::DateTime<chrono::Utc>) -> Result<()> {
            self.inner.probe_write(at)
        }
        fn save_candles(&self, candles: &[Candle]) -> Result<()> {
            self.inner.save_candles(candles)
        }
        fn load_candles(
            &self,
            symbol: &Symbol,
            interval: Interval,
            end: Option<chrono::DateTime<chrono::Utc>>,
            limit: usize,
        ) -> Result<Vec<Candle>> {
            self.inner.load_candles(symbol, interval, end, limit)
        }
        fn save_levels(&self, position: &Position) -> Result<()> {
            self.inner.save_levels(position)
        }
        fn load_setting(&self, key: &str) -> Result<Option<String>> {
            self.inner.load_setting(key)
        }
        fn save_setting(&self, key: &str, value: &str) -> Result<()> {
            self.inner.save_setting(key, value)
        }
        fn acquire_fence(&self) -> Result<u64> {
            self.inner.acquire_fence()
        }
        fn fence_epoch(&self) -> Option<u64> {
            self.inner.fence_epoch()
        }
    }
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_in_the_books_before_the_next_command() {
    let w = world();
    let backend = Arc::new(LosesOneAnswer {
        inner: Storage::open(":memory:").unwrap(),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    let (trading, task) = w.start(Storage::new(SharedLosesOneAnswer(Arc::clone(&backend))));
    w.price("BTCUSDT", "100");
    let first = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("a"))))
        .await
        .unwrap();
    assert_eq!(first.trade.id, 1);

    // TC0: the commit lands but the engine hears an error: the client is told storage_error.
    backend.arm();
    let lost = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("2"), Some("b")))).await;
    assert!(matches!(lost, Err(ServiceError::Storage(_))), "{lost:?}");

    // TC1: the retry is answered from the storage: the trade that landed, not a second one.
    let retry = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("2"), Some("b"))))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.trade.id, 2);

    // TC2: the books were read again: the next trade gets the next id (no collision with the
    // one that landed), and the position holds all three buys.
    let next = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("3"), Some("c"))))
        .await
        .unwrap();
    assert_eq!(next.trade.id, 3);
    let summary = guarded(trading.summary()).await.unwrap();
    let btc = summary
        .positions
        .iter()
        .find(|p| p.position.symbol == symbol("BTCUSDT"))
        .expect("a BTC position");
    assert_eq!(btc.position.quantity, dec("6"));
    assert_books_balance(&summary);
    w.stop(task).await;
}
