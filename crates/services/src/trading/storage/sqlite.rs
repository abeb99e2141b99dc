//! The SQLite backend: one file (WAL, `synchronous=FULL`), decimals as TEXT, each trade written
//! in one transaction together with the books it produces.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use cryptobot_domain::{
    Candle, ClientOrderId, DailyProfit, Interval, Order, OrderPage, OrderQuery, OrderSize,
    OrderStatus, OrderType, Performance, Position, Side, StatsAccumulator, Symbol,
    SymbolPerformance, TimeInForce, Trade, TradeOrigin, TradePage, TradeQuery,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use rust_decimal::Decimal;

use super::{StorageBackend, StoredTrade, add_to_day, check_fence};
use crate::ServiceError;
use crate::trading::ledger::Account;

/// Version of the schema below, kept in `PRAGMA user_version`. Version 2 added `orders` and
/// `candles`, version 3 `engine_settings` and `engine_fence`; an older file gets the tables on
/// open (`CREATE TABLE IF NOT EXISTS`), nothing else changes.
const SCHEMA_VERSION: i64 = 3;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Decimals are TEXT so they come back exactly as written; the trade row also keeps the size
/// the order asked for, which idempotent repeats are compared against.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trades (
    id                 INTEGER PRIMARY KEY,
    symbol             TEXT NOT NULL,
    side               TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    price              TEXT NOT NULL,
    quantity           TEXT NOT NULL,
    fee                TEXT NOT NULL,
    notional           TEXT NOT NULL,
    realized_pnl       TEXT NOT NULL,
    executed_at        TEXT NOT NULL,
    client_order_id    TEXT UNIQUE,
    origin             TEXT NOT NULL,
    request_size_kind  TEXT NOT NULL CHECK (request_size_kind IN ('quantity', 'amount')),
    request_size_value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    symbol          TEXT PRIMARY KEY,
    quantity        TEXT NOT NULL,
    avg_entry_price TEXT NOT NULL,
    cost_basis      TEXT NOT NULL,
    stop_loss       TEXT,
    take_profit     TEXT
);
CREATE TABLE IF NOT EXISTS orders (
    id                INTEGER PRIMARY KEY,
    client_order_id   TEXT UNIQUE,
    symbol            TEXT NOT NULL,
    side              TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type        TEXT NOT NULL,
    quantity          TEXT,
    amount            TEXT,
    price             TEXT,
    stop_price        TEXT,
    time_in_force     TEXT NOT NULL,
    post_only         INTEGER NOT NULL,
    status            TEXT NOT NULL,
    reserved_cash     TEXT NOT NULL,
    reserved_quantity TEXT NOT NULL,
    trade_id          INTEGER,
    reason            TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (status) WHERE status IN ('new', 'triggered');
CREATE TABLE IF NOT EXISTS candles (
    symbol    TEXT NOT NULL,
    interval  TEXT NOT NULL,
    open_time INTEGER NOT NULL,
    open      TEXT NOT NULL,
    high      TEXT NOT NULL,
    low       TEXT NOT NULL,
    close     TEXT NOT NULL,
    volume    TEXT NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    initial_cash TEXT NOT NULL,
    cash         TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    fees_paid    TEXT NOT NULL,
    trade_count  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS write_probe (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_fence (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);
INSERT OR IGNORE INTO engine_fence (id, epoch) VALUES (1, 0);
";

const ORDER_COLUMNS: &str = "id, client_order_id, symbol, side, order_type, quantity, amount, \
     price, stop_price, time_in_force, post_only, status, reserved_cash, reserved_quantity, \
     trade_id, reason, created_at, updated_at";

const TRADE_COLUMNS: &str = "id, symbol, side, price, quantity, fee, notional, realized_pnl, \
     executed_at, client_order_id, origin, request_size_kind, request_size_value";

/// The SQLite database of the paper account (wrap it in [`super::Storage`] to share it).
///
/// Every method blocks on disk I/O: async callers run them in `tokio::task::spawn_blocking`.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    /// The fence epoch this handle acquired, 0 before it did.
    held: AtomicU64,
}

impl SqliteStorage {
    /// Opens (creating parent directories and the schema if needed) the SQLite file at `path`;
    /// `":memory:"` opens a private in-memory database.
    ///
    /// The database runs in WAL mode with `synchronous=FULL`, so a committed trade survives a
    /// crash or power loss.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the directory or file cannot be created or opened, or the
    /// file holds a newer schema.
    pub fn open(path: &str) -> Result<Self, ServiceError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory().db()?
        } else {
            if let Some(parent) = Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|err| {
                    ServiceError::Storage(format!("cannot create {}: {err}", parent.display()))
                })?;
            }
            Connection::open(path).db()?
        };
        conn.busy_timeout(BUSY_TIMEOUT).db()?;
        // In-memory databases answer "memory"; there is no file to protect then.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .db()?;
        conn.pragma_update(None, "synchronous", "FULL").db()?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .db()?;
        if version > SCHEMA_VERSION {
            return Err(ServiceError::Storage(format!(
                "database schema version {version} is newer than this program's {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA).db()?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .db()?;
        Ok(Self {
            conn: Mutex::new(conn),
            held: AtomicU64::new(0),
        })
    }

    /// Begins a write transaction (`IMMEDIATE`: it holds the write lock from its start, so the
    /// fence read below stays true until the commit) and checks the fence in it.
    fn write<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let current: i64 = tx
            .query_row("SELECT epoch FROM engine_fence WHERE id = 1", [], |row| {
                row.get(0)
            })
            .db()?;
        check_fence(
            self.held.load(Ordering::SeqCst),
            u64::try_from(current).unwrap_or(0),
        )?;
        // Dropping the transaction on an error rolls it back.
        let value = work(&tx)?;
        tx.commit().db()?;
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back when the guard dropped, so
        // the connection is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One page of rows of `sql` (already filtered and ordered): those `matches` keeps, at most
    /// `limit`, and whether another one followed. Trades and orders page the same way.
    fn page<T>(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        matches: impl Fn(&T) -> bool,
        limit: usize,
    ) -> Result<(Vec<T>, bool), ServiceError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql).db()?;
        let rows = statement.query_map(params, read).db()?;
        let mut page = Vec::with_capacity(limit.min(1000));
        for row in rows {
            let item = row.db()?;
            if !matches(&item) {
                continue;
            }
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(item);
        }
        Ok((page, false))
    }

    fn query_orders<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Vec<Order>, ServiceError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql).db()?;
        let rows = statement.query_map(params, read_order).db()?;
        rows.collect::<Result<Vec<_>, _>>().db()
    }

    fn query_trades<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Vec<StoredTrade>, ServiceError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql).db()?;
        let rows = statement.query_map(params, read_trade).db()?;
        rows.collect::<Result<Vec<_>, _>>().db()
    }
}

impl StorageBackend for SqliteStorage {
    fn load_account(&self) -> Result<Option<Account>, ServiceError> {
        self.lock()
            .query_row(
                "SELECT initial_cash, cash, realized_pnl, fees_paid, trade_count FROM account \
                 WHERE id = 1",
                [],
                |row| {
                    Ok(Account {
                        initial_cash: decimal(row, 0)?,
                        cash: decimal(row, 1)?,
                        realized_pnl: decimal(row, 2)?,
                        fees_paid: decimal(row, 3)?,
                        trade_count: count(row, 4)?,
                    })
                },
            )
            .optional()
            .db()
    }

    fn init_account(&self, account: &Account) -> Result<(), ServiceError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO account (id, initial_cash, cash, realized_pnl, fees_paid, trade_count) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                params![
                    account.initial_cash.to_string(),
                    account.cash.to_string(),
                    account.realized_pnl.to_string(),
                    account.fees_paid.to_string(),
                    to_i64(account.trade_count)?,
                ],
            )
            .db()?;
            Ok(())
        })
    }

    fn load_positions(&self) -> Result<Vec<Position>, ServiceError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(
                "SELECT symbol, quantity, avg_entry_price, cost_basis, stop_loss, take_profit \
             FROM positions ORDER BY symbol",
            )
            .db()?;
        let rows = statement
            .query_map([], |row| {
                Ok(Position {
                    symbol: parse_symbol(row, 0)?,
                    quantity: decimal(row, 1)?,
                    avg_entry_price: decimal(row, 2)?,
                    cost_basis: decimal(row, 3)?,
                    stop_loss: optional_decimal(row, 4)?,
                    take_profit: optional_decimal(row, 5)?,
                })
            })
            .db()?;
        rows.collect::<Result<Vec<_>, _>>().db()
    }

    fn load_trades(&self) -> Result<Vec<Trade>, ServiceError> {
        self.query_trades(
            &format!("SELECT {TRADE_COLUMNS} FROM trades ORDER BY id"),
            [],
        )
        .map(|trades| trades.into_iter().map(|stored| stored.trade).collect())
    }

    fn trades(&self, query: &TradeQuery) -> Result<TradePage, ServiceError> {
        let order = if query.ascending() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades \
             WHERE (?1 IS NULL OR symbol = ?1) AND (?2 IS NULL OR client_order_id = ?2) \
             AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR id > ?4) \
             AND (?5 IS NULL OR substr(executed_at, 1, 19) >= ?5) \
             AND (?6 IS NULL OR substr(executed_at, 1, 19) <= ?6) \
             ORDER BY id {order}"
        );
        let id = |id: Option<u64>| id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let second = |time: Option<chrono::DateTime<Utc>>| {
            time.map(|time| time.format("%Y-%m-%dT%H:%M:%S").to_string())
        };
        let (trades, more) = self.page(
            &sql,
            params![
                query.symbol.as_ref().map(Symbol::as_str),
                query.client_order_id.as_ref().map(ClientOrderId::as_str),
                id(query.before_id),
                id(query.after_id),
                second(query.from),
                second(query.to),
            ],
            |row| read_trade(row).map(|stored| stored.trade),
            |trade| query.matches(trade),
            query.limit,
        )?;
        Ok(TradePage { trades, more })
    }

    fn find_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<StoredTrade>, ServiceError> {
        self.query_trades(
            &format!("SELECT {TRADE_COLUMNS} FROM trades WHERE client_order_id = ?1"),
            [client_order_id.as_str()],
        )
        .map(|trades| trades.into_iter().next())
    }

    fn commit_fill(
        &self,
        trade: &Trade,
        size: OrderSize,
        position: Option<&Position>,
        account: &Account,
        order: Option<&Order>,
    ) -> Result<(), ServiceError> {
        let (size_kind, size_value) = match size {
            OrderSize::Quantity(value) => ("quantity", value),
            OrderSize::Amount(value) => ("amount", value),
        };
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO trades ({TRADE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                params![
                    to_i64(trade.id)?,
                    trade.symbol.as_str(),
                    trade.side.as_str(),
                    trade.price.to_string(),
                    trade.quantity.to_string(),
                    trade.fee.to_string(),
                    trade.notional.to_string(),
                    trade.realized_pnl.to_string(),
                    trade
                        .executed_at
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    trade.client_order_id.as_ref().map(ClientOrderId::as_str),
                    trade.origin.as_str(),
                    size_kind,
                    size_value.to_string(),
                ],
            )
            .db()?;
            match position {
                Some(position) => {
                    tx.execute(
                        "INSERT INTO positions \
                     (symbol, quantity, avg_entry_price, cost_basis, stop_loss, take_profit) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (symbol) DO UPDATE SET quantity = excluded.quantity, \
                     avg_entry_price = excluded.avg_entry_price, \
                     cost_basis = excluded.cost_basis, stop_loss = excluded.stop_loss, \
                     take_profit = excluded.take_profit",
                        params![
                            position.symbol.as_str(),
                            position.quantity.to_string(),
                            position.avg_entry_price.to_string(),
                            position.cost_basis.to_string(),
                            position.stop_loss.map(|level| level.to_string()),
                            position.take_profit.map(|level| level.to_string()),
                        ],
                    )
                    .db()?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM positions WHERE symbol = ?1",
                        [trade.symbol.as_str()],
                    )
                    .db()?;
                }
            }
            let updated = tx
            .execute(
                "UPDATE account SET cash = ?1, realized_pnl = ?2, fees_paid = ?3, trade_count = ?4 \
             WHERE id = 1",
                params![
                    account.cash.to_string(),
                    account.realized_pnl.to_string(),
                    account.fees_paid.to_string(),
                    to_i64(account.trade_count)?,
                ],
            )
            .db()?;
            if updated != 1 {
                // Returning the error rolls the trade back.
                return Err(ServiceError::Storage("account row is missing".to_owned()));
            }
            if let Some(order) = order {
                write_order(tx, order)?;
            }
            Ok(())
        })
    }

    fn save_orders(&self, orders: &[Order]) -> Result<(), ServiceError> {
        self.write(|tx| orders.iter().try_for_each(|order| write_order(tx, order)))
    }

    fn load_open_orders(&self) -> Result<Vec<Order>, ServiceError> {
        self.query_orders(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status IN ('new', 'triggered') \
                 ORDER BY id"
            ),
            [],
        )
    }

    fn last_order_id(&self) -> Result<u64, ServiceError> {
        let id: Option<i64> = self
            .lock()
            .query_row("SELECT MAX(id) FROM orders", [], |row| row.get(0))
            .db()?;
        Ok(id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
    }

    fn find_order_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<Order>, ServiceError> {
        self.query_orders(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = ?1"),
            [client_order_id.as_str()],
        )
        .map(|orders| orders.into_iter().next())
    }

    fn find_order(&self, id: u64) -> Result<Option<Order>, ServiceError> {
        // SQLite's ids are at most i64::MAX: a larger one (a client's) names no order.
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.query_orders(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
            [id],
        )
        .map(|orders| orders.into_iter().next())
    }

    fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ServiceError> {
        let order = if query.ascending() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders \
             WHERE (?1 IS NULL OR symbol = ?1) AND (?2 IS NULL OR client_order_id = ?2) \
             AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR id > ?4) \
             ORDER BY id {order}"
        );
        let id = |id: Option<u64>| id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let (orders, more) = self.page(
            &sql,
            params![
                query.symbol.as_ref().map(Symbol::as_str),
                query.client_order_id.as_ref().map(ClientOrderId::as_str),
                id(query.before_id),
                id(query.after_id),
            ],
            read_order,
            |order| query.matches(order),
            query.limit,
        )?;
        Ok(OrderPage { orders, more })
    }

    fn performance(&self) -> Result<Performance, ServiceError> {
        let mut per_symbol: BTreeMap<Symbol, StatsAccumulator> = BTreeMap::new();
        let mut total = StatsAccumulator::default();
        let conn = self.lock();
        let mut statement = conn
            .prepare("SELECT symbol, side, fee, notional, realized_pnl FROM trades ORDER BY id")
            .db()?;
        let mut rows = statement.query([]).db()?;
        while let Some(row) = rows.next().db()? {
            let symbol = parse_symbol(row, 0).db()?;
            let side = read_side(row, 1).db()?;
            let (fee, notional, pnl) = (
                decimal(row, 2).db()?,
                decimal(row, 3).db()?,
                decimal(row, 4).db()?,
            );
            per_symbol
                .entry(symbol)
                .or_default()
                .add(side, fee, notional, pnl);
            total.add(side, fee, notional, pnl);
        }
        Ok(Performance {
            symbols: per_symbol
                .into_iter()
                .map(|(symbol, stats)| SymbolPerformance {
                    symbol,
                    stats: stats.finish(),
                })
                .collect(),
            total: total.finish(),
        })
    }

    fn daily_profit(&self, since: NaiveDate) -> Result<Vec<DailyProfit>, ServiceError> {
        // `executed_at` is RFC 3339 in UTC (`...Z`), so its first ten characters are the UTC day.
        let mut days: BTreeMap<NaiveDate, DailyProfit> = BTreeMap::new();
        let conn = self.lock();
        let mut statement = conn
            .prepare(
                "SELECT substr(executed_at, 1, 10), fee, realized_pnl FROM trades \
                 WHERE substr(executed_at, 1, 10) >= ?1",
            )
            .db()?;
        let mut rows = statement
            .query(params![since.format("%Y-%m-%d").to_string()])
            .db()?;
        while let Some(row) = rows.next().db()? {
            let date = read_day(row, 0).db()?;
            add_to_day(
                &mut days,
                date,
                decimal(row, 1).db()?,
                decimal(row, 2).db()?,
            );
        }
        Ok(days.into_values().rev().collect())
    }

    fn probe_write(&self, at: DateTime<Utc>) -> Result<(), ServiceError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?1)",
                params![at.to_rfc3339()],
            )
            .db()?;
            Ok(())
        })
    }

    fn save_candles(&self, candles: &[Candle]) -> Result<(), ServiceError> {
        self.write(|tx| {
            for candle in candles {
                tx.execute(
                    "INSERT OR REPLACE INTO candles \
                 (symbol, interval, open_time, open, high, low, close, volume) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        candle.symbol.as_str(),
                        candle.interval.as_str(),
                        candle.open_time.timestamp(),
                        candle.open.to_string(),
                        candle.high.to_string(),
                        candle.low.to_string(),
                        candle.close.to_string(),
                        candle.volume.to_string(),
                    ],
                )
                .db()?;
            }
            Ok(())
        })
    }

    fn load_candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        end: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Candle>, ServiceError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare(
                "SELECT symbol, interval, open_time, open, high, low, close, volume FROM candles \
             WHERE symbol = ?1 AND interval = ?2 AND (?3 IS NULL OR open_time < ?3) \
             ORDER BY open_time DESC LIMIT ?4",
            )
            .db()?;
        let end = end.map(|end| {
            // A bound inside a second still excludes the candle that starts in it.
            let secs = end.timestamp();
            if end.timestamp_subsec_nanos() > 0 {
                secs + 1
            } else {
                secs
            }
        });
        let rows = statement
            .query_map(
                params![
                    symbol.as_str(),
                    interval.as_str(),
                    end,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    let open_time: i64 = row.get(2)?;
                    Ok(Candle {
                        symbol: parse_symbol(row, 0)?,
                        interval: Interval::from_name(row.get_ref(1)?.as_str()?)
                            .ok_or_else(|| bad_value(1, "interval"))?,
                        open_time: DateTime::from_timestamp(open_time, 0)
                            .ok_or_else(|| bad_value(2, "open_time"))?,
                        open: decimal(row, 3)?,
                        high: decimal(row, 4)?,
                        low: decimal(row, 5)?,
                        close: decimal(row, 6)?,
                        volume: decimal(row, 7)?,
                        closed: true,
                    })
                },
            )
            .db()?;
        let mut candles = rows.collect::<Result<Vec<_>, _>>().db()?;
        candles.reverse();
        Ok(candles)
    }

    fn save_levels(&self, position: &Position) -> Result<(), ServiceError> {
        let updated = self.write(|tx| {
            tx.execute(
                "UPDATE positions SET stop_loss = ?2, take_profit = ?3 WHERE symbol = ?1",
                params![
                    position.symbol.as_str(),
                    position.stop_loss.map(|level| level.to_string()),
                    position.take_profit.map(|level| level.to_string()),
                ],
            )
            .db()
            .and_then(|updated| {
                if updated == 1 {
                    Ok(updated)
                } else {
                    Err(ServiceError::Storage(format!(
                        "position {} is not stored",
                        position.symbol
                    )))
                }
            })
        });
        updated.map(|_| ())
    }

    fn load_setting(&self, key: &str) -> Result<Option<String>, ServiceError> {
        self.lock()
            .query_row(
                "SELECT value FROM engine_settings WHERE key = ?1",
                [key],
                |row| row.get(0),
            )
            .optional()
            .db()
    }

    fn save_setting(&self, key: &str, value: &str) -> Result<(), ServiceError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO engine_settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .db()?;
            Ok(())
        })
    }

    fn acquire_fence(&self) -> Result<u64, ServiceError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let epoch: i64 = tx
            .query_row(
                "UPDATE engine_fence SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
                [],
                |row| row.get(0),
            )
            .db()?;
        tx.commit().db()?;
        let epoch = u64::try_from(epoch)
            .map_err(|_| ServiceError::Storage(format!("fence epoch {epoch} is negative")))?;
        self.held.store(epoch, Ordering::SeqCst);
        Ok(epoch)
    }

    fn fence_epoch(&self) -> Option<u64> {
        Some(self.held.load(Ordering::SeqCst)).filter(|epoch| *epoch > 0)
    }
}

/// Inserts an order or replaces its stored state.
fn write_order(tx: &rusqlite::Transaction<'_>, order: &Order) -> Result<(), ServiceError> {
    let text = |value: Option<Decimal>| value.map(|value| value.to_string());
    let time = |time: DateTime<Utc>| time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO orders ({ORDER_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        params![
            to_i64(order.id)?,
            order.client_order_id.as_ref().map(ClientOrderId::as_str),
            order.symbol.as_str(),
            order.side.as_str(),
            order.order_type.as_str(),
            text(order.quantity),
            text(order.amount),
            text(order.price),
            text(order.stop_price),
            order.time_in_force.as_str(),
            order.post_only,
            order.status.as_str(),
            order.reserved_cash.to_string(),
            order.reserved_quantity.to_string(),
            order.trade_id.map(to_i64).transpose()?,
            order.reason.as_deref(),
            time(order.created_at),
            time(order.updated_at),
        ],
    )
    .db()?;
    Ok(())
}

/// Reads one row selected with [`ORDER_COLUMNS`].
fn read_order(row: &Row<'_>) -> rusqlite::Result<Order> {
    let side = match row.get_ref(3)?.as_str()? {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(bad_value(3, &format!("side {other:?}"))),
    };
    let name = |column: usize| -> rusqlite::Result<&str> { Ok(row.get_ref(column)?.as_str()?) };
    let order_type = OrderType::from_name(name(4)?).ok_or_else(|| bad_value(4, "order_type"))?;
    let time_in_force =
        TimeInForce::from_name(name(9)?).ok_or_else(|| bad_value(9, "time_in_force"))?;
    let status = OrderStatus::from_name(name(11)?).ok_or_else(|| bad_value(11, "status"))?;
    let time = |column: usize| -> rusqlite::Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(row.get_ref(column)?.as_str()?)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|err| bad_value(column, &format!("time: {err}")))
    };
    let client_order_id = row
        .get_ref(1)?
        .as_str_or_null()?
        .map(ClientOrderId::parse)
        .transpose()
        .map_err(|err| bad_value(1, &err.to_string()))?;
    let id: i64 = row.get(0)?;
    let trade_id: Option<i64> = row.get(14)?;
    Ok(Order {
        id: u64::try_from(id).map_err(|_| bad_value(0, &format!("order id {id}")))?,
        client_order_id,
        symbol: parse_symbol(row, 2)?,
        side,
        order_type,
        quantity: optional_decimal(row, 5)?,
        amount: optional_decimal(row, 6)?,
        price: optional_decimal(row, 7)?,
        stop_price: optional_decimal(row, 8)?,
        time_in_force,
        post_only: row.get(10)?,
        status,
        reserved_cash: decimal(row, 12)?,
        reserved_quantity: decimal(row, 13)?,
        trade_id: trade_id.and_then(|id| u64::try_from(id).ok()),
        reason: row.get(15)?,
        created_at: time(16)?,
        updated_at: time(17)?,
    })
}

/// Reads one row selected with [`TRADE_COLUMNS`].
fn read_trade(row: &Row<'_>) -> rusqlite::Result<StoredTrade> {
    let side = read_side(row, 2)?;
    let executed_at = DateTime::parse_from_rfc3339(row.get_ref(8)?.as_str()?)
        .map_err(|err| bad_value(8, &format!("executed_at: {err}")))?
        .with_timezone(&Utc);
    let client_order_id = row
        .get_ref(9)?
        .as_str_or_null()?
        .map(ClientOrderId::parse)
        .transpose()
        .map_err(|err| bad_value(9, &err.to_string()))?;
    let origin_name = row.get_ref(10)?.as_str()?;
    let origin = TradeOrigin::from_name(origin_name)
        .ok_or_else(|| bad_value(10, &format!("origin {origin_name:?}")))?;
    let size_value = decimal(row, 12)?;
    let size = match row.get_ref(11)?.as_str()? {
        "quantity" => OrderSize::Quantity(size_value),
        "amount" => OrderSize::Amount(size_value),
        other => return Err(bad_value(11, &format!("request_size_kind {other:?}"))),
    };
    let id: i64 = row.get(0)?;
    let trade = Trade {
        id: u64::try_from(id).map_err(|_| bad_value(0, &format!("trade id {id}")))?,
        symbol: parse_symbol(row, 1)?,
        side,
        price: decimal(row, 3)?,
        quantity: decimal(row, 4)?,
        fee: decimal(row, 5)?,
        notional: decimal(row, 6)?,
        realized_pnl: decimal(row, 7)?,
        executed_at,
        client_order_id,
        origin,
    };
    Ok(StoredTrade { trade, size })
}

fn read_day(row: &Row<'_>, column: usize) -> rusqlite::Result<NaiveDate> {
    let text = row.get_ref(column)?.as_str()?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|err| bad_value(column, &format!("executed_at day {text:?}: {err}")))
}

fn read_side(row: &Row<'_>, column: usize) -> rusqlite::Result<Side> {
    match row.get_ref(column)?.as_str()? {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(bad_value(column, &format!("side {other:?}"))),
    }
}

/// Turns a database error into [`ServiceError::Storage`]. A private conversion, not a `From`
/// impl: only this module speaks SQLite, so no other `?` can turn a rusqlite error into a service
/// error.
trait OrStorage<T> {
    fn db(self) -> Result<T, ServiceError>;
}

impl<T> OrStorage<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T, ServiceError> {
        self.map_err(|err| ServiceError::Storage(err.to_string()))
    }
}

fn bad_value(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unreadable stored value: {what}").into(),
    )
}

fn decimal(row: &Row<'_>, column: usize) -> rusqlite::Result<Decimal> {
    let text = row.get_ref(column)?.as_str()?;
    Decimal::from_str(text).map_err(|err| bad_value(column, &format!("decimal {text:?}: {err}")))
}

fn optional_decimal(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Decimal>> {
    row.get_ref(column)?
        .as_str_or_null()?
        .map(|text| {
            Decimal::from_str(text)
                .map_err(|err| bad_value(column, &format!("decimal {text:?}: {err}")))
        })
        .transpose()
}

fn count(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| bad_value(column, &format!("count {value}")))
}

fn parse_symbol(row: &Row<'_>, column: usize) -> rusqlite::Result<Symbol> {
    Symbol::parse(row.get_ref(column)?.as_str()?).map_err(|err| bad_value(column, &err.to_string()))
}

fn to_i64(value: u64) -> Result<i64, ServiceError> {
    i64::try_from(value).map_err(|_| ServiceError::Storage(format!("{value} does not fit SQLite")))
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A unique path under the temp directory; the files are removed by [`TempDb`]'s drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> Self {
            let unique = format!(
                "cryptobot-storage-{name}-{}-{}",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            );
            Self(std::env::temp_dir().join(unique).join("paper.db"))
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn a_file_runs_in_wal_mode() {
        let db = TempDb::new("wal");
        let storage = SqliteStorage::open(db.path()).unwrap();
        let mode: String = storage
            .lock()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn unreadable_values_are_storage_errors() {
        let storage = SqliteStorage::open(":memory:").unwrap();
        storage
            .lock()
            .execute_batch(
                "INSERT INTO account VALUES (1, '10000', 'lots', '0', '0', 0);
                 INSERT INTO positions VALUES ('btc', '1', '1', '1', NULL, NULL);",
            )
            .unwrap();
        assert!(matches!(
            storage.load_account(),
            Err(ServiceError::Storage(_))
        ));
        assert!(matches!(
            storage.load_positions(),
            Err(ServiceError::Storage(_))
        ));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let db = TempDb::new("schema");
        drop(SqliteStorage::open(db.path()).unwrap());
        let conn = Connection::open(db.path()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteStorage::open(db.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
