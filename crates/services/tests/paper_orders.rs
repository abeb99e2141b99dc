#![allow(
    dead_code,
    unused_imports,
    reason = "the harness is shared in shape with paper_trading.rs"
)]
//! Black-box tests of resting orders in the paper trading engine: matching on tickers,
//! reservations, cancels, idempotency and restarts, on a real bus, a manual clock, a
//! hand-written market and SQLite storage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cryptobot_domain::fixtures::{self, dec, instant, symbol};
use cryptobot_domain::{
    AlertType, Channel, ClientOrderId, DomainError, Event, LevelChange, OrderFields, OrderQuery,
    OrderRef, OrderRequest, OrderSize, OrderStatus, OrderType, PortfolioSummary, PositionUpdate,
    Severity, Side, StatusFilter, Symbol, Ticker, TimeInForce, Trade, TradeOrigin, TradeQuery,
    TradeRequest,
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

fn limit(side: Side, quantity: &str, price: &str, cid: Option<&str>) -> OrderRequest {
    checked(limit_fields(side, quantity, price, cid))
}

/// The request, checked (every order these tests place is valid).
fn checked(fields: OrderFields) -> OrderRequest {
    OrderRequest::new(fields).expect("a valid order")
}

fn limit_fields(side: Side, quantity: &str, price: &str, cid: Option<&str>) -> OrderFields {
    OrderFields {
        symbol: symbol("BTCUSDT"),
        side,
        order_type: OrderType::Limit,
        size: qty(quantity),
        price: Some(dec(price)),
        stop_price: None,
        time_in_force: TimeInForce::Gtc,
        post_only: false,
        client_order_id: cid.map(|id| ClientOrderId::parse(id).unwrap()),
    }
}

fn stop(side: Side, quantity: &str, stop_price: &str, limit_price: Option<&str>) -> OrderRequest {
    checked(OrderFields {
        order_type: if limit_price.is_some() {
            OrderType::StopLimit
        } else {
            OrderType::StopMarket
        },
        price: limit_price.map(dec),
        stop_price: Some(dec(stop_price)),
        ..limit_fields(side, quantity, "1", None)
    })
}

fn order_events(events: &[Event]) -> Vec<(OrderStatus, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::OrderUpdated(update) => Some((update.event, update.order.id)),
            _ => None,
        })
        .collect()
}

fn code<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> &'static str {
    result.unwrap_err().code()
}

#[tokio::test]
async fn buy_limit_rests_reserves_and_fills_at_the_ask_when_it_crosses() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "105");

    let placed = guarded(trading.place_order(limit(Side::Buy, "2", "100", None)))
        .await
        .unwrap();
    assert!(!placed.replayed);
    let order = placed.order;
    assert_eq!(order.status, OrderStatus::New);
    // 2 * 100 + 0.1 % fee
    assert_eq!(order.reserved_cash, dec("200.2"));
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(summary.cash, dec("10000"));
    assert_eq!(summary.reserved.cash, dec("200.2"));
    assert_eq!(summary.reserved.available_cash, dec("9799.8"));

    // TC0: the ask 100.01 does not reach 100: rests
    w.tick("BTCUSDT", "100");
    // TC1: the price gaps down to 95 (ask 95.01): fills at the ask, better than the limit
    w.tick("BTCUSDT", "95");
    let trade = next(&mut events, |e| match e {
        Event::TradeExecuted(trade) => Some(trade.clone()),
        _ => None,
    })
    .await;
    assert_eq!((trade.price, trade.quantity), (dec("95.01"), dec("2")));
    let seen = collect_until(&mut events, |e| matches!(e, Event::PortfolioChanged(_))).await;
    assert_eq!(order_events(&seen), [(OrderStatus::Filled, order.id)]);
    let Some(Event::OrderUpdated(update)) = seen.first() else {
        panic!("the fill's order update follows its trade: {seen:?}")
    };
    assert_eq!(update.order.trade_id, Some(trade.id));
    assert_eq!(update.order.reserved_cash, Decimal::ZERO);
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(summary.reserved.cash, Decimal::ZERO);
    assert_eq!(summary.cash, dec("10000") - dec("190.02") - dec("0.19002"));
    assert_books_balance(&summary);
    let open = guarded(trading.open_orders()).await.unwrap();
    assert!(open.orders.is_empty());
    w.stop(task).await;
}

#[tokio::test]
async fn immediate_or_cancel_fill_or_kill_and_post_only() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.tick("BTCUSDT", "100"); // bid 99.99, ask 100.01
    let with = |tif: TimeInForce, price: &str, post_only: bool| {
        checked(OrderFields {
            time_in_force: tif,
            post_only,
            ..limit_fields(Side::Buy, "1", price, None)
        })
    };
    // TC0: IOC that crosses fills at once at the ask
    let ioc = guarded(trading.place_order(with(TimeInForce::Ioc, "101", false)))
        .await
        .unwrap()
        .order;
    assert_eq!(ioc.status, OrderStatus::Filled);
    // TC1: IOC that does not cross expires, reserving nothing
    let ioc = guarded(trading.place_order(with(TimeInForce::Ioc, "99", false)))
        .await
        .unwrap()
        .order;
    assert_eq!(ioc.status, OrderStatus::Expired);
    assert_eq!(ioc.reason.as_deref(), Some("could not fill at once"));
    // TC2: FOK behaves alike (no partial fills in the simulator)
    let fok = guarded(trading.place_order(with(TimeInForce::Fok, "100.01", false)))
        .await
        .unwrap()
        .order;
    assert_eq!(fok.status, OrderStatus::Filled);
    let fok = guarded(trading.place_order(with(TimeInForce::Fok, "100", false)))
        .await
        .unwrap()
        .order;
    assert_eq!(fok.status, OrderStatus::Expired);
    // TC3: post-only that would cross is refused, nothing stored
    let crossing = guarded(trading.place_order(with(TimeInForce::Gtc, "100.01", true))).await;
    assert_eq!(code(crossing), "post_only_would_cross");
    // TC4: post-only that rests is accepted
    let maker = guarded(trading.place_order(with(TimeInForce::Gtc, "100", true)))
        .await
        .unwrap()
        .order;
    assert_eq!(maker.status, OrderStatus::New);
    let page = guarded(trading.orders(OrderQuery::latest(10)))
        .await
        .unwrap();
    let statuses: Vec<OrderStatus> = page.orders.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            OrderStatus::New,
            OrderStatus::Expired,
            OrderStatus::Filled,
            OrderStatus::Expired,
            OrderStatus::Filled
        ]
    );
    let summary = guarded(trading.summary()).await.unwrap();
    assert_books_balance(&summary);
    assert_eq!(summary.reserved.cash, dec("100.1"));
    w.stop(task).await;
}

#[tokio::test]
async fn stops_trigger_on_the_last_price_then_fill() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "100");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("3"), None)))
        .await
        .unwrap();
    // A sell stop-market at 90 and a sell stop-limit 90 / 85.
    let market_stop = guarded(trading.place_order(stop(Side::Sell, "1", "90", None)))
        .await
        .unwrap()
        .order;
    let limit_stop = guarded(trading.place_order(stop(Side::Sell, "1", "90", Some("85"))))
        .await
        .unwrap()
        .order;
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(
        summary
            .reserved
            .quantities
            .get(&symbol("BTCUSDT"))
            .map(|q| q.0),
        Some(dec("2"))
    );
    drain(&mut events);
    // TC0: 90.01 does not reach the stops
    w.tick("BTCUSDT", "90.01");
    // TC1: 89 triggers both; the stop-market fills at the last price, the stop-limit rests at
    // 85 (bid 88.99 is above 85, so a sell limit at 85 fills at the bid at once)
    w.tick("BTCUSDT", "89");
    let seen = collect_until(&mut events, |e| {
        matches!(e, Event::OrderUpdated(u) if u.order.id == limit_stop.id && u.event == OrderStatus::Filled)
    })
    .await;
    assert_eq!(
        order_events(&seen),
        [
            (OrderStatus::Triggered, market_stop.id),
            (OrderStatus::Filled, market_stop.id),
            (OrderStatus::Triggered, limit_stop.id),
            (OrderStatus::Filled, limit_stop.id),
        ]
    );
    let trades: Vec<Decimal> = seen
        .iter()
        .filter_map(|e| match e {
            Event::TradeExecuted(t) => Some(t.price),
            _ => None,
        })
        .collect();
    assert_eq!(trades, [dec("89"), dec("88.99")]);
    let summary = guarded(trading.summary()).await.unwrap();
    assert_books_balance(&summary);
    assert!(summary.reserved.quantities.is_empty());
    w.stop(task).await;
}

#[tokio::test]
async fn reserved_funds_cannot_be_spent_twice() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.tick("BTCUSDT", "100");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), None)))
        .await
        .unwrap();
    let cash = guarded(trading.summary()).await.unwrap().cash;
    // A buy limit at 50 reserving almost all the cash.
    let quantity =
        (cash / dec("50.05")).round_dp_with_strategy(8, rust_decimal::RoundingStrategy::ToZero);
    let big = guarded(trading.place_order(limit(Side::Buy, &quantity.to_string(), "50", None)))
        .await
        .unwrap()
        .order;
    let available = cash - big.reserved_cash;
    assert!(available < dec("1"), "{available}");
    // TC0: a market buy needing more than the free cash is refused
    let err = guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.5"), None)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::InsufficientFunds {
            needed: dec("50.05"),
            available,
        }
    );
    // TC1: another limit buy too
    assert_eq!(
        code(guarded(trading.place_order(limit(Side::Buy, "1", "40", None))).await),
        "insufficient_funds"
    );
    // TC2: a sell limit holds the whole position; a market sell and a second sell are refused
    guarded(trading.place_order(limit(Side::Sell, "1", "200", None)))
        .await
        .unwrap();
    assert_eq!(
        code(guarded(trading.execute(order(Side::Sell, "BTCUSDT", qty("0.1"), None))).await),
        "insufficient_position"
    );
    assert_eq!(
        code(guarded(trading.place_order(stop(Side::Sell, "0.1", "90", None))).await),
        "insufficient_position"
    );
    // TC3: canceling the buy frees its cash
    guarded(trading.cancel_order(OrderRef::Id(big.id)))
        .await
        .unwrap();
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("0.5"), None)))
        .await
        .unwrap();
    assert_books_balance(&guarded(trading.summary()).await.unwrap());
    w.stop(task).await;
}

#[tokio::test]
async fn cancels_by_id_and_key_and_cancel_all_by_symbol() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "100");
    w.tick("ETHUSDT", "10");
    let a = guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("a"))))
        .await
        .unwrap()
        .order;
    let b = guarded(trading.place_order(limit(Side::Buy, "1", "80", None)))
        .await
        .unwrap()
        .order;
    let eth = checked(OrderFields {
        symbol: symbol("ETHUSDT"),
        ..limit_fields(Side::Buy, "1", "9", None)
    });
    let c = guarded(trading.place_order(eth)).await.unwrap().order;
    // TC0: by client order id
    let canceled =
        guarded(trading.cancel_order(OrderRef::ClientOrderId(ClientOrderId::parse("a").unwrap())))
            .await
            .unwrap();
    assert_eq!(
        (canceled.id, canceled.status),
        (a.id, OrderStatus::Canceled)
    );
    // TC1: again: no longer open
    let err = guarded(trading.cancel_order(OrderRef::Id(a.id)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::OrderNotOpen {
            id: a.id,
            status: OrderStatus::Canceled
        }
    );
    // TC2: unknown ids
    assert_eq!(
        code(guarded(trading.cancel_order(OrderRef::Id(999))).await),
        "unknown_order"
    );
    // TC3: cancel all of BTCUSDT leaves ETHUSDT's
    let all = guarded(trading.cancel_all_orders(Some(symbol("BTCUSDT"))))
        .await
        .unwrap();
    assert_eq!(all.iter().map(|o| o.id).collect::<Vec<_>>(), [b.id]);
    let open = guarded(trading.open_orders()).await.unwrap();
    assert_eq!(open.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [c.id]);
    assert_eq!(open.seq, w.bus.last_seq(&Channel::Orders));
    let seen = drain(&mut events);
    assert_eq!(
        order_events(&seen),
        [
            (OrderStatus::New, a.id),
            (OrderStatus::New, b.id),
            (OrderStatus::New, c.id),
            (OrderStatus::Canceled, a.id),
            (OrderStatus::Canceled, b.id),
        ]
    );
    // TC4: filters
    let query = OrderQuery {
        status: Some(StatusFilter::Open),
        ..OrderQuery::latest(10)
    };
    let page = guarded(trading.orders(query)).await.unwrap();
    assert_eq!(page.orders.iter().map(|o| o.id).collect::<Vec<_>>(), [c.id]);
    let query = OrderQuery {
        symbol: Some(symbol("BTCUSDT")),
        ..OrderQuery::latest(1)
    };
    let page = guarded(trading.orders(query)).await.unwrap();
    assert_eq!((page.orders[0].id, page.more), (b.id, true));
    w.stop(task).await;
}

#[tokio::test]
async fn client_order_ids_are_one_namespace_for_orders_and_trades() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    w.tick("BTCUSDT", "100");
    let first = guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("k1"))))
        .await
        .unwrap();
    // TC0: the same order again is replayed, nothing new placed
    let again = guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("k1"))))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, first.order);
    // TC1: a different order under the key
    assert_eq!(
        code(guarded(trading.place_order(limit(Side::Buy, "2", "90", Some("k1")))).await),
        "duplicate_client_order_id"
    );
    // TC2: a trade under the order's key
    assert_eq!(
        code(guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("k1")))).await),
        "duplicate_client_order_id"
    );
    // TC3: an order under a trade's key
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("1"), Some("t1"))))
        .await
        .unwrap();
    assert_eq!(
        code(guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("t1")))).await),
        "duplicate_client_order_id"
    );
    // TC4: a replay after the order filled answers its new state
    w.tick("BTCUSDT", "85");
    let filled = guarded(async {
        loop {
            let replay = trading
                .place_order(limit(Side::Buy, "1", "90", Some("k1")))
                .await
                .unwrap();
            if replay.order.status == OrderStatus::Filled {
                return replay;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(filled.replayed);
    let page = guarded(trading.orders(OrderQuery::latest(10)))
        .await
        .unwrap();
    assert_eq!(page.orders.len(), 1);
    w.stop(task).await;
}

#[tokio::test]
async fn a_due_fill_that_cannot_be_paid_rejects_the_order() {
    let w = world();
    let (trading, task) = w.start_in_memory();
    let mut events = w.bus.subscribe();
    w.tick("BTCUSDT", "100");
    // A buy stop-market at 110 reserves at 110; it triggers on a gap to 200 and would cost
    // ~200 per unit: with the cash spent meanwhile it cannot be paid.
    let stopped = guarded(trading.place_order(stop(Side::Buy, "40", "110", None)))
        .await
        .unwrap()
        .order;
    assert_eq!(stopped.reserved_cash, dec("4404.4"));
    let free = guarded(trading.summary())
        .await
        .unwrap()
        .reserved
        .available_cash;
    guarded(trading.execute(order(
        Side::Buy,
        "BTCUSDT",
        OrderSize::Amount(free - dec("1")),
        None,
    )))
    .await
    .unwrap();
    w.tick("BTCUSDT", "200");
    let seen = collect_until(
        &mut events,
        |e| matches!(e, Event::OrderUpdated(u) if u.event == OrderStatus::Rejected),
    )
    .await;
    let Some(Event::OrderUpdated(update)) = seen.last() else {
        panic!()
    };
    assert!(
        update
            .order
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("insufficient funds"),
        "{:?}",
        update.order.reason
    );
    let summary = guarded(trading.summary()).await.unwrap();
    assert_eq!(summary.reserved.cash, Decimal::ZERO);
    assert_books_balance(&summary);
    w.stop(task).await;
}

#[tokio::test]
async fn open_orders_and_reservations_survive_a_restart() {
    let db = TempDb::new("orders-restart");
    let w = world();
    let (trading, task) = w.start(Storage::open(db.path()).unwrap());
    w.tick("BTCUSDT", "100");
    guarded(trading.execute(order(Side::Buy, "BTCUSDT", qty("2"), None)))
        .await
        .unwrap();
    let buy = guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("r1"))))
        .await
        .unwrap()
        .order;
    let sell = guarded(trading.place_order(stop(Side::Sell, "1.5", "80", Some("79"))))
        .await
        .unwrap()
        .order;
    let before = guarded(trading.summary()).await.unwrap();
    w.stop(task).await;
    drop(trading);

    let w = world();
    let (trading, task) = w.start(Storage::open(db.path()).unwrap());
    w.price("BTCUSDT", "100");
    let open = guarded(trading.open_orders()).await.unwrap();
    assert_eq!(open.orders, [buy.clone(), sell.clone()]);
    let after = guarded(trading.summary()).await.unwrap();
    assert_eq!(after.reserved, before.reserved);
    // The replayed key still answers the stored order, and new ids continue.
    let replay = guarded(trading.place_order(limit(Side::Buy, "1", "90", Some("r1"))))
        .await
        .unwrap();
    assert!(replay.replayed);
    let next_order = guarded(trading.place_order(limit(Side::Buy, "1", "80", None)))
        .await
        .unwrap()
        .order;
    assert_eq!(next_order.id, sell.id + 1);
    // The buy fills after the restart, exactly once.
    w.tick("BTCUSDT", "85");
    let filled = guarded(async {
        loop {
            let open = trading.open_orders().await.unwrap();
            if !open.orders.iter().any(|o| o.id == buy.id) {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    filled.await;
    let page = guarded(trading.trades(TradeQuery::latest(10)))
        .await
        .unwrap();
    // The first buy and the 90 limit's fill (ask 85.01); the 80 limit and the stop rest.
    assert_eq!(page.trades.len(), 2, "{page:?}");
    assert_eq!(page.trades[0].client_order_id, buy.client_order_id);
    let open = guarded(trading.open_orders()).await.unwrap();
    assert_eq!(
        open.orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        [sell.id, next_order.id]
    );
    w.stop(task).await;
    drop(trading);

    // Reservations that the books cannot cover refuse to start.
    db.raw()
        .execute(
            "UPDATE orders SET reserved_quantity = '5' WHERE id = ?1",
            [i64::try_from(sell.id).unwrap()],
        )
        .unwrap();
    let w = world();
    let err = w.try_start(Storage::open(db.path()).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("books do not balance: open orders reserve"),
        "{err}"
    );
}

#[tokio::test]
async fn a_successor_publishes_each_order_whose_stored_status_was_not_published() {
    let db = TempDb::new("republish-orders");
    let first = world();
    let (trading, task) = first.start(Storage::open(db.path()).unwrap());
    first.price("BTCUSDT", "100");
    let place = |price: &'static str| {
        let trading = trading.clone();
        async move {
            guarded(trading.place_order(limit(Side::Buy, "1", price, None)))
                .await
                .unwrap()
                .order
        }
    };
    let (kept, canceled) = (place("50").await, place("40").await);
    guarded(trading.cancel_order(OrderRef::Id(canceled.id)))
        .await
        .unwrap();
    let unseen = place("30").await;
    first.stop(task).await;

    // The predecessor's orders stream showed both first orders as new, nothing later.
    let clock = Arc::new(ManualClock::new(instant()));
    let bus = Arc::new(ContinuedBus {
        inner: InMemoryBus::new(64, Arc::clone(&clock) as Arc<dyn Clock>),
        inherited: cryptobot_services::Inherited {
            last_trade: 0,
            last_order: canceled.id,
            orders: [(kept.id, OrderStatus::New), (canceled.id, OrderStatus::New)].into(),
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

    // TC0: the cancel it never published and the order placed after its last one; not the
    // order whose status it had published; then the portfolio.
    let seen = collect_until(&mut events, |event| {
        matches!(event, Event::PortfolioChanged(_))
    })
    .await;
    assert_eq!(
        order_events(&seen),
        [
            (OrderStatus::Canceled, canceled.id),
            (OrderStatus::New, unseen.id)
        ]
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    second.stop(task).await;
}
