//! The storage promises, held against both backends: every test runs on a fresh SQLite file and
//! on a fresh PostgreSQL schema (skipped without PostgreSQL, failed under `CI=true`).

use chrono::{DateTime, NaiveDate, Utc};
use cryptobot_domain::fixtures::{dec, instant, symbol, trade};
use cryptobot_domain::{
    Candle, ClientOrderId, Interval, Performance, Position, Side, Trade, TradeOrigin, TradeQuery,
};

use super::*;

/// A database to open storage handles on, removed on drop.
enum TestDb {
    /// A file under the temp directory.
    Sqlite(std::path::PathBuf),
    /// A schema of its own.
    #[cfg(feature = "postgres")]
    Postgres(needs_postgres::TestSchema),
}

impl TestDb {
    /// A new handle on the database (several may be open at once).
    fn open(&self) -> Storage {
        match self {
            Self::Sqlite(path) => Storage::open(path.to_str().unwrap()).unwrap(),
            #[cfg(feature = "postgres")]
            Self::Postgres(schema) => Storage::open_postgres(&schema.url()).unwrap(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Sqlite(path) = self
            && let Some(dir) = path.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `check` on a fresh database of each backend.
fn for_each_backend(test: &str, check: impl Fn(&TestDb)) {
    let unique = format!(
        "cryptobot-storage-{test}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut dbs = vec![TestDb::Sqlite(
        std::env::temp_dir().join(unique).join("paper.db"),
    )];
    #[cfg(feature = "postgres")]
    dbs.extend(needs_postgres::TestSchema::create(test).map(TestDb::Postgres));
    for db in &dbs {
        // Shown with the output of a failing test.
        eprintln!("{test}: on {}", db.kind());
        check(db);
    }
}

fn full_trade() -> Trade {
    Trade {
        id: 7,
        symbol: symbol("ETHUSDT"),
        side: Side::Sell,
        price: dec("2345.67890123"),
        quantity: dec("0.12345678"),
        fee: dec("0.28958998"),
        notional: dec("289.58997775"),
        realized_pnl: dec("-1.00000001"),
        executed_at: instant() + chrono::TimeDelta::nanoseconds(123_456_789),
        client_order_id: Some(ClientOrderId::parse("web-1:a_b.c").unwrap()),
        origin: TradeOrigin::TakeProfit,
    }
}

fn position(name: &str) -> Position {
    Position {
        symbol: symbol(name),
        quantity: dec("1.50"),
        avg_entry_price: dec("100"),
        cost_basis: dec("150.00000001"),
        stop_loss: Some(dec("90.5")),
        take_profit: None,
    }
}

fn account() -> Account {
    Account {
        initial_cash: dec("10000"),
        cash: dec("9849.99999999"),
        realized_pnl: dec("-0.15"),
        fees_paid: dec("0.15"),
        trade_count: 1,
    }
}

#[test]
fn candles_round_trip_newest_last_and_before_the_end() {
    for_each_backend("candles_round_trip_newest_last_and_before_the_end", |db| {
        let candle = |minute: i64, close: &str| Candle {
            symbol: symbol("BTCUSDT"),
            interval: Interval::M1,
            open_time: DateTime::from_timestamp(1_704_067_200 + 60 * minute, 0).unwrap(),
            open: dec("1"),
            high: dec("2.5"),
            low: dec("0.5"),
            close: dec(close),
            volume: dec("0.00000001"),
            closed: true,
        };
        {
            let storage = db.open();
            storage
                .save_candles(&[candle(0, "1"), candle(1, "2"), candle(2, "3")])
                .unwrap();
            // The same start again replaces.
            storage.save_candles(&[candle(2, "3.5")]).unwrap();
        }
        let storage = db.open();
        let btc = symbol("BTCUSDT");
        // TC0: newest `limit`, oldest first
        let got = storage.load_candles(&btc, Interval::M1, None, 2).unwrap();
        assert_eq!(got, [candle(1, "2"), candle(2, "3.5")]);
        // TC1: before an end (exclusive, also inside a second)
        let end = candle(2, "0").open_time;
        let got = storage
            .load_candles(&btc, Interval::M1, Some(end), 10)
            .unwrap();
        assert_eq!(got, [candle(0, "1"), candle(1, "2")]);
        let inside = end - chrono::TimeDelta::milliseconds(500);
        assert_eq!(
            storage
                .load_candles(&btc, Interval::M1, Some(inside), 10)
                .unwrap()
                .len(),
            2
        );
        // TC2: other intervals and symbols are apart
        assert!(
            storage
                .load_candles(&btc, Interval::M5, None, 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            storage
                .load_candles(&symbol("ETHUSDT"), Interval::M1, None, 10)
                .unwrap()
                .is_empty()
        );
    });
}

/// Commits `trades` with no positions kept (the books are not what these tests read).
fn commit_all(storage: &Storage, trades: &[Trade]) {
    for t in trades {
        storage
            .commit_trade(t, OrderSize::Quantity(t.quantity), None, &account())
            .unwrap();
    }
}

fn priced(id: u64, name: &str, side: Side, fee: &str, pnl: &str, days_later: i64) -> Trade {
    Trade {
        side,
        fee: dec(fee),
        realized_pnl: dec(pnl),
        executed_at: instant() + chrono::Duration::days(days_later),
        ..trade(id, name, "10.5", "2")
    }
}

#[test]
fn performance_sums_each_symbol_exactly() {
    for_each_backend("performance_sums_each_symbol_exactly", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        assert_eq!(storage.performance().unwrap(), Performance::default());
        commit_all(
            &storage,
            &[
                priced(1, "ETHUSDT", Side::Buy, "0.021", "-0.021", 0),
                priced(2, "BTCUSDT", Side::Buy, "0.1", "-0.1", 0),
                priced(3, "ETHUSDT", Side::Sell, "0.021", "1.958", 0),
                priced(4, "ETHUSDT", Side::Sell, "0.021", "-0.2", 1),
            ],
        );
        let performance = storage.performance().unwrap();
        let symbols: Vec<&str> = performance
            .symbols
            .iter()
            .map(|s| s.symbol.as_str())
            .collect();
        assert_eq!(symbols, ["BTCUSDT", "ETHUSDT"]);
        let btc = &performance.symbols[0].stats;
        assert_eq!((btc.trades, btc.win_rate), (1, None));
        assert_eq!((btc.fees, btc.realized_pnl), (dec("0.1"), dec("-0.1")));
        let eth = &performance.symbols[1].stats;
        assert_eq!(eth.trades, 3);
        assert_eq!(eth.fees, dec("0.063"));
        assert_eq!(eth.realized_pnl, dec("1.737"));
        assert_eq!(eth.volume, dec("63"));
        assert_eq!(eth.win_rate, Some(dec("0.5")));
        let total = &performance.total;
        assert_eq!((total.trades, total.volume), (4, dec("84")));
        assert_eq!(
            (total.fees, total.realized_pnl),
            (dec("0.163"), dec("1.637"))
        );
        assert_eq!(total.win_rate, Some(dec("0.5")));
    });
}

#[test]
fn daily_profit_groups_by_utc_day_newest_first_from_the_given_day() {
    for_each_backend(
        "daily_profit_groups_by_utc_day_newest_first_from_the_given_day",
        |db| {
            let storage = db.open();
            storage.init_account(&Account::new(dec("10000"))).unwrap();
            let mut late = priced(3, "ETHUSDT", Side::Sell, "0.5", "4", 2);
            // One second before midnight is still the earlier day.
            late.executed_at -= chrono::Duration::seconds(1);
            commit_all(
                &storage,
                &[
                    priced(1, "ETHUSDT", Side::Buy, "0.25", "-0.25", 0),
                    priced(2, "BTCUSDT", Side::Buy, "0.1", "-0.1", 1),
                    late,
                    priced(4, "ETHUSDT", Side::Sell, "0.5", "1.5", 2),
                ],
            );
            let day = |offset: i64| (instant() + chrono::Duration::days(offset)).date_naive();
            let rows = storage.daily_profit(day(0)).unwrap();
            let summary: Vec<(NaiveDate, u64, Decimal, Decimal)> = rows
                .iter()
                .map(|r| (r.date, r.trades, r.realized_pnl, r.fees))
                .collect();
            assert_eq!(
                summary,
                [
                    (day(2), 1, dec("1.5"), dec("0.5")),
                    (day(1), 2, dec("3.9"), dec("0.6")),
                    (day(0), 1, dec("-0.25"), dec("0.25")),
                ]
            );
            let recent = storage.daily_profit(day(1)).unwrap();
            assert_eq!(recent.len(), 2);
            assert!(storage.daily_profit(day(3)).unwrap().is_empty());
        },
    );
}

#[test]
fn new_database_has_no_account() {
    for_each_backend("new_database_has_no_account", |db| {
        let storage = db.open();
        assert_eq!(storage.load_account().unwrap(), None);
        assert!(storage.load_positions().unwrap().is_empty());
        assert!(storage.load_trades().unwrap().is_empty());
    });
}

#[test]
fn trade_position_and_account_round_trip_exactly() {
    for_each_backend("trade_position_and_account_round_trip_exactly", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        let t = full_trade();
        let size = OrderSize::Amount(dec("289.60"));
        storage
            .commit_trade(&t, size, Some(&position("ETHUSDT")), &account())
            .unwrap();
        assert_eq!(storage.load_trades().unwrap(), std::slice::from_ref(&t));
        assert_eq!(storage.load_positions().unwrap(), [position("ETHUSDT")]);
        assert_eq!(storage.load_account().unwrap(), Some(account()));
        let found = storage
            .find_by_client_order_id(t.client_order_id.as_ref().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(found, StoredTrade { trade: t, size });
        // Scale survives too, not only the value.
        assert_eq!(found.size, OrderSize::Amount(dec("289.6")));
        let OrderSize::Amount(kept) = found.size else {
            panic!()
        };
        assert_eq!(kept.to_string(), "289.60");
    });
}

#[test]
fn closing_trade_deletes_the_position() {
    for_each_backend("closing_trade_deletes_the_position", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        let buy = trade(1, "BTCUSDT", "10", "1");
        storage
            .commit_trade(
                &buy,
                OrderSize::Quantity(dec("1")),
                Some(&position("BTCUSDT")),
                &account(),
            )
            .unwrap();
        let sell = Trade {
            side: Side::Sell,
            ..trade(2, "BTCUSDT", "10", "1")
        };
        storage
            .commit_trade(&sell, OrderSize::Quantity(dec("1")), None, &account())
            .unwrap();
        assert!(storage.load_positions().unwrap().is_empty());
        let recent: Vec<u64> = storage
            .recent_trades(10)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(recent, [2, 1]);
        assert_eq!(storage.recent_trades(1).unwrap()[0].id, 2);
    });
}

#[test]
fn trade_pages_filter_by_symbol_time_and_cursor() {
    for_each_backend("trade_pages_filter_by_symbol_time_and_cursor", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        // Ten trades 500 ms apart, alternating symbols: times with and without a fraction.
        let start = instant();
        for id in 1..=10_u64 {
            let symbol = if id % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" };
            let mut t = trade(id, symbol, "10", "1");
            t.executed_at =
                start + chrono::Duration::milliseconds(500 * i64::try_from(id).unwrap());
            t.client_order_id = Some(ClientOrderId::parse(&format!("c-{id}")).unwrap());
            storage
                .commit_trade(&t, OrderSize::Quantity(dec("1")), None, &account())
                .unwrap();
        }
        let ids = |query: TradeQuery| {
            let page = storage.trades(&query).unwrap();
            (
                page.trades.iter().map(|t| t.id).collect::<Vec<_>>(),
                page.more,
            )
        };
        // TC0: newest first, then the next page from the cursor
        assert_eq!(ids(TradeQuery::latest(4)), (vec![10, 9, 8, 7], true));
        let next = TradeQuery {
            before_id: Some(7),
            ..TradeQuery::latest(4)
        };
        assert_eq!(ids(next), (vec![6, 5, 4, 3], true));
        let last = TradeQuery {
            before_id: Some(3),
            ..TradeQuery::latest(4)
        };
        assert_eq!(ids(last), (vec![2, 1], false));
        // TC1: after_id runs oldest first
        let after = TradeQuery {
            after_id: Some(8),
            ..TradeQuery::latest(4)
        };
        assert_eq!(ids(after), (vec![9, 10], false));
        // TC2: symbol and a time range whose bounds fall on a fraction (from inclusive, to
        // exclusive): trade 4 is at +2.0 s, trade 7 at +3.5 s
        let range = TradeQuery {
            symbol: Some(symbol("ETHUSDT")),
            from: Some(start + chrono::Duration::milliseconds(2000)),
            to: Some(start + chrono::Duration::milliseconds(4000)),
            ..TradeQuery::latest(100)
        };
        assert_eq!(ids(range), (vec![6, 4], false));
        let fraction = TradeQuery {
            from: Some(start + chrono::Duration::milliseconds(2500)),
            to: Some(start + chrono::Duration::milliseconds(3500)),
            ..TradeQuery::latest(100)
        };
        assert_eq!(ids(fraction), (vec![6, 5], false));
        // TC3: lookup by client order id
        let lookup = TradeQuery {
            client_order_id: Some(ClientOrderId::parse("c-3").unwrap()),
            ..TradeQuery::latest(100)
        };
        assert_eq!(ids(lookup), (vec![3], false));
        let missing = TradeQuery {
            client_order_id: Some(ClientOrderId::parse("c-99").unwrap()),
            ..TradeQuery::latest(100)
        };
        assert_eq!(ids(missing), (vec![], false));
    });
}

#[test]
fn failed_commit_writes_nothing() {
    for_each_backend("failed_commit_writes_nothing", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        let t = full_trade();
        let size = OrderSize::Quantity(dec("1"));
        storage
            .commit_trade(&t, size, Some(&position("ETHUSDT")), &account())
            .unwrap();
        // TC0: same client order id again, with a new id: the UNIQUE constraint refuses it
        let again = Trade {
            id: 8,
            ..full_trade()
        };
        let mut changed = account();
        changed.cash = dec("1");
        let err = storage
            .commit_trade(&again, size, None, &changed)
            .unwrap_err();
        assert!(matches!(err, ServiceError::Storage(_)));
        assert_eq!(storage.load_trades().unwrap().len(), 1);
        assert_eq!(storage.load_positions().unwrap(), [position("ETHUSDT")]);
        assert_eq!(storage.load_account().unwrap(), Some(account()));
    });
}

#[test]
fn commit_without_an_account_row_rolls_back() {
    for_each_backend("commit_without_an_account_row_rolls_back", |db| {
        let storage = db.open();
        let err = storage
            .commit_trade(
                &full_trade(),
                OrderSize::Quantity(dec("1")),
                None,
                &account(),
            )
            .unwrap_err();
        assert_eq!(err, ServiceError::Storage("account row is missing".into()));
        assert!(storage.load_trades().unwrap().is_empty());
    });
}

#[test]
fn reopening_a_file_keeps_everything() {
    for_each_backend("reopening_a_file_keeps_everything", |db| {
        {
            let storage = db.open();
            storage.init_account(&Account::new(dec("10000"))).unwrap();
            storage
                .commit_trade(
                    &full_trade(),
                    OrderSize::Quantity(dec("0.12345678")),
                    Some(&position("ETHUSDT")),
                    &account(),
                )
                .unwrap();
            let mut levels = position("ETHUSDT");
            levels.stop_loss = None;
            levels.take_profit = Some(dec("3000"));
            storage.save_levels(&levels).unwrap();
        }
        let storage = db.open();
        assert_eq!(storage.load_account().unwrap(), Some(account()));
        assert_eq!(storage.load_trades().unwrap(), [full_trade()]);
        let stored = storage.load_positions().unwrap();
        assert_eq!(
            (stored[0].stop_loss, stored[0].take_profit),
            (None, Some(dec("3000")))
        );
    });
}

#[test]
fn idempotency_lookup_misses_unknown_ids() {
    for_each_backend("idempotency_lookup_misses_unknown_ids", |db| {
        let storage = db.open();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        storage
            .commit_trade(
                &full_trade(),
                OrderSize::Quantity(dec("1")),
                None,
                &account(),
            )
            .unwrap();
        let other = ClientOrderId::parse("web-2").unwrap();
        assert_eq!(storage.find_by_client_order_id(&other).unwrap(), None);
    });
}

#[test]
fn save_levels_needs_a_stored_position() {
    for_each_backend("save_levels_needs_a_stored_position", |db| {
        let storage = db.open();
        let err = storage.save_levels(&position("BTCUSDT")).unwrap_err();
        assert!(matches!(err, ServiceError::Storage(_)));
    });
}

#[test]
fn settings_round_trip_and_replace() {
    for_each_backend("settings_round_trip_and_replace", |db| {
        let storage = db.open();
        assert_eq!(storage.load_setting("auto_trading").unwrap(), None);
        storage.save_setting("auto_trading", "on").unwrap();
        storage.save_setting("auto_trading", "off").unwrap();
        storage.save_setting("other", "").unwrap();
        assert_eq!(
            db.open().load_setting("auto_trading").unwrap().as_deref(),
            Some("off")
        );
        assert_eq!(storage.load_setting("other").unwrap().as_deref(), Some(""));
    });
}

#[test]
fn a_newer_fence_rolls_back_every_write_of_the_older_handle() {
    for_each_backend("a_newer_fence_rolls_back", |db| {
        let (a, b) = (db.open(), db.open());
        assert_eq!(a.fence_epoch(), None);
        let first = a.acquire_fence().unwrap();
        assert_eq!(a.fence_epoch(), Some(first));
        a.init_account(&Account::new(dec("10000"))).unwrap();
        a.commit_trade(
            &trade(1, "BTCUSDT", "10", "1"),
            OrderSize::Quantity(dec("1")),
            Some(&position("BTCUSDT")),
            &account(),
        )
        .unwrap();
        let second = b.acquire_fence().unwrap();
        assert_eq!(second, first + 1);
        let fenced = ServiceError::Fenced {
            held: first,
            current: second,
        };
        // TC0: every kind of write, through a clone too (clones share the epoch)
        let clone = a.clone();
        let t = Trade {
            client_order_id: Some(ClientOrderId::parse("late").unwrap()),
            ..trade(2, "BTCUSDT", "10", "1")
        };
        assert_eq!(
            clone.commit_trade(&t, OrderSize::Quantity(dec("1")), None, &account()),
            Err(fenced.clone())
        );
        assert_eq!(a.init_account(&account()), Err(fenced.clone()));
        let mut levels = position("BTCUSDT");
        levels.take_profit = Some(dec("99"));
        assert_eq!(a.save_levels(&levels), Err(fenced.clone()));
        assert_eq!(a.save_setting("k", "v"), Err(fenced.clone()));
        assert_eq!(a.probe_write(instant()), Err(fenced.clone()));
        let candle = Candle {
            symbol: symbol("BTCUSDT"),
            interval: Interval::M1,
            open_time: DateTime::from_timestamp(1_704_067_200, 0).unwrap(),
            open: dec("1"),
            high: dec("1"),
            low: dec("1"),
            close: dec("1"),
            volume: dec("1"),
            closed: true,
        };
        assert_eq!(a.save_candles(&[candle]), Err(fenced.clone()));
        assert_eq!(a.save_orders(&[]), Err(fenced));
        // TC1: nothing of it is in the tables
        let ids: Vec<u64> = b.load_trades().unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1]);
        assert_eq!(b.load_positions().unwrap(), [position("BTCUSDT")]);
        assert_eq!(b.load_setting("k").unwrap(), None);
        assert!(
            b.load_candles(&symbol("BTCUSDT"), Interval::M1, None, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            b.find_by_client_order_id(t.client_order_id.as_ref().unwrap())
                .unwrap(),
            None
        );
        // TC2: the newer handle writes, and reads still work on the older one
        b.commit_trade(&t, OrderSize::Quantity(dec("1")), None, &account())
            .unwrap();
        assert_eq!(a.load_trades().unwrap().len(), 2);
        // TC3: the older one can take the fence back (as a restarted engine would)
        assert_eq!(a.acquire_fence().unwrap(), second + 1);
        a.save_setting("k", "v").unwrap();
        assert!(matches!(
            b.save_setting("k", "w"),
            Err(ServiceError::Fenced { .. })
        ));
    });
}
