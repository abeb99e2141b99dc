#![allow(
    dead_code,
    unused_imports,
    reason = "the harness is shared in shape with paper_trading.rs"
)]
//! Black-box tests of the runtime controls of the paper trading engine: the auto-trading state
//! (pause / resume, stored across restarts) and the force exit of a position, on a real bus, a
//! manual clock, a hand-written market and SQLite storage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptobot_domain::fixtures::{self, dec, instant, symbol};
use cryptobot_domain::{
    AlertType, BotState, ClientOrderId, Event, ForceExitRequest, LevelChange, OrderFields,
    OrderRequest, OrderSize, OrderStatus, OrderType, PortfolioSummary, PositionUpdate, Severity,
    Side, Symbol, Ticker, TimeInForce, TradeOrigin, TradeRequest, TradingState,
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

fn sell_limit(quantity: &str, price: &str) -> OrderRequest {
    limit(Side::Sell, quantity, price)
}

fn buy_limit(quantity: &str, price: &str) -> OrderRequest {
    limit(Side::Buy, quantity, price)
}

fn limit(side: Side, quantity: &str, price: &str) -> OrderRequest {
    OrderRequest::new(OrderFields {
        symbol: symbol("BTCUSDT"),
        side,
        order_type: OrderType::Limit,
        size: qty(quantity),
        price: Some(dec(price)),
        stop_price: None,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        client_order_id: None,
    })
    .expect("a valid order")
}

fn exit(name: &str, cid: Option<&str>) -> ForceExitRequest {
    ForceExitRequest {
        symbol: symbol(name),
        client_order_id: cid.map(|id| ClientOrderId::parse(id).unwrap()),
        requested_by: Some("ops".to_owned()),
    }
}

fn auto_buy(name: &str) -> TradeRequest {
    TradeRequest::new(
        symbol(name),
        Side::Buy,
        OrderSize::Amount(dec("100")),
        None,
        TradeOrigin::Auto,
    )
    .unwrap()
}

fn start_with(w: &World, storage: Storage, auto_trade: bool) -> (PaperTrading, JoinHandle<()>) {
    PaperTrading::spawn(
        TradingConfig {
            auto_trade,
            ..TradingConfig::default()
        },
        storage,
        Arc::clone(&w.market) as Arc<dyn MarketService>,
        Arc::clone(&w.bus),
        Arc::clone(&w.clock) as Arc<dyn Clock>,
        Arc::clone(&w.metrics),
        w.shutdown.clone(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_pause_refuses_the_bots_trades_only_and_survives_a_restart() {
    let db = TempDb::new("controls-pause");
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start(Storage::open(db.path()).unwrap());
    let mut events = w.bus.subscribe();

    // TC0: nothing stored: trading.auto_trade (on by default), never changed
    let initial = guarded(trading.bot_state()).await.unwrap();
    assert_eq!(initial, BotState::initial(TradingState::Running));

    // TC1: a pause is committed, stamped with who and when, and published on `bot`
    let paused = guarded(trading.set_trading_state(TradingState::Paused, Some("ops".into())))
        .await
        .unwrap();
    assert_eq!(paused.state, TradingState::Paused);
    assert_eq!(paused.changed_by.as_deref(), Some("ops"));
    assert_eq!(paused.changed_at, Some(w.clock.now()));
    let published = next(&mut events, |e| match e {
        Event::BotStateChanged(bot) => Some(bot.clone()),
        _ => None,
    })
    .await;
    assert_eq!(published, paused);
    assert_eq!(w.bus.last_seq(&cryptobot_domain::Channel::Bot), 1);

    // TC2: pausing a paused bot answers the state as it is and publishes nothing
    w.clock.advance(chrono::TimeDelta::seconds(5));
    let again = guarded(trading.set_trading_state(TradingState::Paused, Some("other".into())))
        .await
        .unwrap();
    assert_eq!(again, paused);
    assert_eq!(w.bus.last_seq(&cryptobot_domain::Channel::Bot), 1);

    // TC3: the bot's own trade is refused, no alert raised; a manual one goes through
    let alerts_before = w.count(&w.metrics.alerts_raised);
    let refused = guarded(trading.execute(auto_buy("BTCUSDT"))).await;
    assert_eq!(refused.unwrap_err(), ServiceError::TradingPaused);
    assert_eq!(w.count(&w.metrics.alerts_raised), alerts_before);
    let manual = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    assert_eq!(manual.trade.origin, TradeOrigin::Manual);

    // TC4: the state comes back after a restart, with who and when
    w.stop(task).await;
    let w2 = world();
    let (trading, task) = w2.start(Storage::open(db.path()).unwrap());
    assert_eq!(guarded(trading.bot_state()).await.unwrap(), paused);
    let refused = guarded(trading.execute(auto_buy("BTCUSDT"))).await;
    assert_eq!(refused.unwrap_err().code(), "trading_paused");

    // TC5: resumed, the bot trades again
    let running = guarded(trading.set_trading_state(TradingState::Running, None))
        .await
        .unwrap();
    assert_eq!(running.state, TradingState::Running);
    assert_eq!(running.changed_by, None);
    w2.price("BTCUSDT", "100");
    let auto = guarded(trading.execute(auto_buy("BTCUSDT"))).await.unwrap();
    assert_eq!(auto.trade.origin, TradeOrigin::Auto);
    w2.stop(task).await;
}

#[tokio::test]
async fn the_configured_state_applies_only_while_none_is_stored() {
    let db = TempDb::new("controls-config");
    let w = world();
    // TC0: trading.auto_trade = false starts paused
    let (trading, task) = start_with(&w, Storage::open(db.path()).unwrap(), false);
    assert_eq!(
        guarded(trading.bot_state()).await.unwrap(),
        BotState::initial(TradingState::Paused)
    );
    guarded(trading.set_trading_state(TradingState::Running, Some("ops".into())))
        .await
        .unwrap();
    w.stop(task).await;
    // TC1: once stored, the stored state wins over the configuration
    let w = world();
    let (trading, task) = start_with(&w, Storage::open(db.path()).unwrap(), false);
    let bot = guarded(trading.bot_state()).await.unwrap();
    assert_eq!(bot.state, TradingState::Running);
    assert_eq!(bot.changed_by.as_deref(), Some("ops"));
    w.stop(task).await;
}

#[tokio::test]
async fn a_pause_keeps_the_stop_loss_watching() {
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start_in_memory();
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    let levels = PositionUpdate {
        stop_loss: LevelChange::Set(dec("90")),
        take_profit: LevelChange::Keep,
    };
    guarded(trading.update_position(symbol("BTCUSDT"), levels))
        .await
        .unwrap();
    guarded(trading.set_trading_state(TradingState::Paused, None))
        .await
        .unwrap();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "85");
    let trade = next(&mut events, |e| match e {
        Event::TradeExecuted(trade) => Some(trade.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (trade.origin, trade.side, trade.quantity),
        (TradeOrigin::StopLoss, Side::Sell, dec("1"))
    );
    w.stop(task).await;
}

#[tokio::test]
async fn a_force_exit_sells_all_of_it_canceling_the_resting_sells_first() {
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start_in_memory();
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("2"), None)))
        .await
        .unwrap();
    let sell = guarded(trading.place_order(sell_limit("1.5", "200")))
        .await
        .unwrap()
        .order;
    let buy = guarded(trading.place_order(buy_limit("1", "50")))
        .await
        .unwrap()
        .order;
    assert_eq!(sell.reserved_quantity, dec("1.5"));
    let mut events = w.bus.subscribe();

    // TC0: the whole 2, as one trade, after the resting sell was canceled; the buy stays
    let exit_one = guarded(trading.force_exit(exit("BTCUSDT", Some("fx-1"))))
        .await
        .unwrap();
    assert!(!exit_one.replayed);
    assert_eq!(
        (
            exit_one.trade.side,
            exit_one.trade.quantity,
            exit_one.trade.origin
        ),
        (Side::Sell, dec("2"), TradeOrigin::ForceExit)
    );
    assert_eq!(exit_one.canceled_orders.len(), 1);
    assert_eq!(exit_one.canceled_orders[0].id, sell.id);
    assert_eq!(exit_one.canceled_orders[0].status, OrderStatus::Canceled);
    let seen = collect_until(&mut events, |e| matches!(e, Event::PortfolioChanged(_))).await;
    assert!(
        matches!(&seen[0], Event::OrderUpdated(update) if update.event == OrderStatus::Canceled && update.order.id == sell.id),
        "the cancel is published before the trade: {seen:?}"
    );
    let summary = guarded(trading.summary()).await.unwrap();
    assert!(summary.positions.is_empty(), "{summary:?}");
    let open = guarded(trading.open_orders()).await.unwrap();
    assert_eq!(
        open.orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        [buy.id]
    );

    // TC1: a repeat of the key answers the first exit, selling nothing
    let replay = guarded(trading.force_exit(exit("BTCUSDT", Some("fx-1"))))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.trade, exit_one.trade);
    assert!(replay.canceled_orders.is_empty());

    // TC2: nothing held any more
    let none = guarded(trading.force_exit(exit("BTCUSDT", Some("fx-2")))).await;
    assert_eq!(none.unwrap_err().code(), "no_position");
    let never = guarded(trading.force_exit(exit("ETHUSDT", None))).await;
    assert_eq!(never.unwrap_err().code(), "no_position");
    // TC3: a symbol the market does not trade, a key used by another trade
    let unknown = guarded(trading.force_exit(exit("DOGEUSDT", None))).await;
    assert_eq!(unknown.unwrap_err().code(), "unknown_symbol");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("m-1"))))
        .await
        .unwrap();
    let taken = guarded(trading.force_exit(exit("BTCUSDT", Some("m-1")))).await;
    assert_eq!(taken.unwrap_err().code(), "duplicate_client_order_id");
    w.stop(task).await;
}

#[tokio::test]
async fn a_force_exit_that_cannot_trade_cancels_nothing() {
    let w = world();
    w.price("BTCUSDT", "100");
    let (trading, task) = w.start_in_memory();
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.5"), None)))
        .await
        .unwrap();
    guarded(trading.place_order(sell_limit("0.5", "200")))
        .await
        .unwrap();
    // The price fell so far that the whole position is worth less than trading.min_notional.
    w.price("BTCUSDT", "0.001");
    let refused = guarded(trading.force_exit(exit("BTCUSDT", None))).await;
    assert_eq!(refused.unwrap_err().code(), "order_too_small");
    let open = guarded(trading.open_orders()).await.unwrap();
    assert_eq!(open.orders.len(), 1, "the resting sell is still open");
    w.stop(task).await;
}
