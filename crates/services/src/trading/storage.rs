//! Durable storage of the paper account in SQLite: the trade log, the open positions and the
//! account row, each trade written in one transaction together with the books it produces.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use cryptobot_domain::{
    Candle, ClientOrderId, DailyProfit, Interval, Order, OrderPage, OrderQuery, OrderSize,
    OrderStatus, OrderType, Performance, Position, Side, StatsAccumulator, Symbol,
    SymbolPerformance, TimeInForce, Trade, TradeOrigin, TradePage, TradeQuery,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use rust_decimal::Decimal;

use super::ledger::Account;
use crate::ServiceError;

/// Version of the schema below, kept in `PRAGMA user_version`. Version 2 added `orders` and
/// `candles`; a version 1 file gets the tables on open (`CREATE TABLE IF NOT EXISTS`), nothing
/// else changes. `engine_settings` came later the same way: an added table, no version step.
const SCHEMA_VERSION: i64 = 2;

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
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
";

const ORDER_COLUMNS: &str = "id, client_order_id, symbol, side, order_type, quantity, amount, \
     price, stop_price, time_in_force, post_only, status, reserved_cash, reserved_quantity, \
     trade_id, reason, created_at, updated_at";

const TRADE_COLUMNS: &str = "id, symbol, side, price, quantity, fee, notional, realized_pnl, \
     executed_at, client_order_id, origin, request_size_kind, request_size_value";

/// A trade as recorded, with the size its order asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrade {
    /// The trade.
    pub trade: Trade,
    /// The size of the request that produced it.
    pub size: OrderSize,
}

/// The SQLite database of the paper account. Cloning shares the one connection.
///
/// Every method blocks on disk I/O: async callers run them in `tokio::task::spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Storage {
    conn: Arc<Mutex<Connection>>,
}

impl Storage {
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
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back when the guard dropped, so
        // the connection is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the account row, `None` for a new database.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn load_account(&self) -> Result<Option<Account>, ServiceError> {
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

    /// Writes the account row of a new account.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error, or when an account exists already.
    pub fn init_account(&self, account: &Account) -> Result<(), ServiceError> {
        self.lock().execute(
            "INSERT INTO account (id, initial_cash, cash, realized_pnl, fees_paid, trade_count) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![
                account.initial_cash.to_string(),
                account.cash.to_string(),
                account.realized_pnl.to_string(),
                account.fees_paid.to_string(),
                to_i64(account.trade_count)?,
            ],
        ).db()?;
        Ok(())
    }

    /// Returns the value of an engine setting, `None` when it was never saved.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    pub fn load_setting(&self, key: &str) -> Result<Option<String>, ServiceError> {
        self.lock()
            .query_row(
                "SELECT value FROM engine_settings WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .db()
    }

    /// Saves (inserts or replaces) an engine setting, committed before it returns.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    pub fn save_setting(&self, key: &str, value: &str) -> Result<(), ServiceError> {
        self.lock()
            .execute(
                "INSERT INTO engine_settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .db()?;
        Ok(())
    }

    /// Returns the open positions, sorted by symbol.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn load_positions(&self) -> Result<Vec<Position>, ServiceError> {
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

    /// Returns every trade in execution order (for replaying the books).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn load_trades(&self) -> Result<Vec<Trade>, ServiceError> {
        self.query_trades(
            &format!("SELECT {TRADE_COLUMNS} FROM trades ORDER BY id"),
            [],
        )
        .map(|trades| trades.into_iter().map(|stored| stored.trade).collect())
    }

    /// Returns up to `limit` of the newest trades, newest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn recent_trades(&self, limit: usize) -> Result<Vec<Trade>, ServiceError> {
        Ok(self.trades(&TradeQuery::latest(limit))?.trades)
    }

    /// Returns one page of the trades matching `query`: newest first, or oldest first when it has
    /// `after_id`, with `more` telling whether further trades match.
    ///
    /// Symbol, client order id and cursors are filtered in SQL; the time range is pre-filtered in
    /// SQL to whole seconds (the stored text's first 19 characters, `YYYY-MM-DDTHH:MM:SS`, sort
    /// like the times they spell, while the variable-length fraction after them does not) and
    /// checked exactly here.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn trades(&self, query: &TradeQuery) -> Result<TradePage, ServiceError> {
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

    /// Returns the trade executed under `client_order_id`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn find_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<StoredTrade>, ServiceError> {
        self.query_trades(
            &format!("SELECT {TRADE_COLUMNS} FROM trades WHERE client_order_id = ?1"),
            [client_order_id.as_str()],
        )
        .map(|trades| trades.into_iter().next())
    }

    /// Records a trade and the books it leads to in one transaction: the trade row, the new
    /// state of its symbol's position (`None` deletes the closed position) and the account row.
    /// Either all of it is durable when this returns `Ok`, or none of it is written.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails (including a duplicate trade id or
    /// client order id); nothing was written then.
    pub fn commit_trade(
        &self,
        trade: &Trade,
        size: OrderSize,
        position: Option<&Position>,
        account: &Account,
    ) -> Result<(), ServiceError> {
        self.commit_fill(trade, size, position, account, None)
    }

    /// [`Storage::commit_trade`] for the fill of an order: the order's new state (filled, with
    /// its trade id) is written in the same transaction, so a fill is never committed without
    /// its order leaving the open set, nor the other way round.
    ///
    /// # Errors
    /// As [`Storage::commit_trade`]; nothing was written then.
    pub fn commit_fill(
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
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
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
            // Dropping the transaction rolls the trade back.
            return Err(ServiceError::Storage("account row is missing".to_owned()));
        }
        if let Some(order) = order {
            write_order(&tx, order)?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Writes orders (new ones or their new state) in one transaction.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails (a client order id used by another order
    /// included); nothing was written then.
    pub fn save_orders(&self, orders: &[Order]) -> Result<(), ServiceError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        for order in orders {
            write_order(&tx, order)?;
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Returns the open orders (`new` or `triggered`), oldest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn load_open_orders(&self) -> Result<Vec<Order>, ServiceError> {
        self.query_orders(
            &format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status IN ('new', 'triggered') \
                 ORDER BY id"
            ),
            [],
        )
    }

    /// Returns the largest order id used (0 for none).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    pub fn last_order_id(&self) -> Result<u64, ServiceError> {
        let id: Option<i64> = self
            .lock()
            .query_row("SELECT MAX(id) FROM orders", [], |row| row.get(0))
            .db()?;
        Ok(id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
    }

    /// Returns the order placed under `client_order_id`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn find_order_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<Order>, ServiceError> {
        self.query_orders(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = ?1"),
            [client_order_id.as_str()],
        )
        .map(|orders| orders.into_iter().next())
    }

    /// Returns the order with this id, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn find_order(&self, id: u64) -> Result<Option<Order>, ServiceError> {
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

    /// Returns one page of the orders matching `query`: newest first, or oldest first with
    /// `after_id`, with `more` telling whether further orders match.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ServiceError> {
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

    /// Sums the whole trade log per symbol (by symbol) and in total. Decimals are summed here,
    /// exactly, not by SQLite (which would add the TEXT columns as floating point).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the log cannot be read.
    pub fn performance(&self) -> Result<Performance, ServiceError> {
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

    /// Sums the trades per UTC day from `since` on, newest day first; days without trades have
    /// no row.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the log cannot be read.
    pub fn daily_profit(&self, since: NaiveDate) -> Result<Vec<DailyProfit>, ServiceError> {
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
            let day = days.entry(date).or_insert(DailyProfit {
                date,
                trades: 0,
                realized_pnl: Decimal::ZERO,
                fees: Decimal::ZERO,
            });
            day.trades += 1;
            day.fees += decimal(row, 1).db()?;
            day.realized_pnl += decimal(row, 2).db()?;
        }
        Ok(days.into_values().rev().collect())
    }

    /// Commits one small write (the time, into `write_probe`), as a trade would: readiness
    /// (`/readyz`) asks this so that a full disk or a read-only file shows before a trade fails.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the write or its commit fails.
    pub fn probe_write(&self, at: DateTime<Utc>) -> Result<(), ServiceError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        tx.execute(
            "INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?1)",
            params![at.to_rfc3339()],
        )
        .db()?;
        tx.commit().db()
    }

    /// Stores closed candles (replacing a stored one of the same symbol, interval and start).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails; nothing was written then.
    pub fn save_candles(&self, candles: &[Candle]) -> Result<(), ServiceError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
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
        tx.commit().db()?;
        Ok(())
    }

    /// Returns up to `limit` stored candles of `symbol` at `interval` opened before `end` (all
    /// when `None`), oldest first: the newest `limit` of them.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    pub fn load_candles(
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

    /// Stores a position's stop-loss and take-profit levels.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or when the position is not stored.
    pub fn save_levels(&self, position: &Position) -> Result<(), ServiceError> {
        let updated = self
            .lock()
            .execute(
                "UPDATE positions SET stop_loss = ?2, take_profit = ?3 WHERE symbol = ?1",
                params![
                    position.symbol.as_str(),
                    position.stop_loss.map(|level| level.to_string()),
                    position.take_profit.map(|level| level.to_string()),
                ],
            )
            .db()?;
        if updated == 1 {
            Ok(())
        } else {
            Err(ServiceError::Storage(format!(
                "position {} is not stored",
                position.symbol
            )))
        }
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
    use cryptobot_domain::fixtures::{dec, instant, symbol, trade};

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
    fn settings_are_saved_replaced_and_survive_a_reopen() {
        let db = TempDb::new("settings");
        {
            let storage = Storage::open(db.path()).unwrap();
            assert_eq!(storage.load_setting("auto_trading").unwrap(), None);
            storage.save_setting("auto_trading", "one").unwrap();
            storage.save_setting("auto_trading", "two").unwrap();
            storage.save_setting("other", "x").unwrap();
        }
        let storage = Storage::open(db.path()).unwrap();
        assert_eq!(
            storage.load_setting("auto_trading").unwrap().as_deref(),
            Some("two")
        );
        assert_eq!(storage.load_setting("other").unwrap().as_deref(), Some("x"));
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
        let db = TempDb::new("candles");
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
            let storage = Storage::open(db.path()).unwrap();
            storage
                .save_candles(&[candle(0, "1"), candle(1, "2"), candle(2, "3")])
                .unwrap();
            // The same start again replaces.
            storage.save_candles(&[candle(2, "3.5")]).unwrap();
        }
        let storage = Storage::open(db.path()).unwrap();
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
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn daily_profit_groups_by_utc_day_newest_first_from_the_given_day() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn new_database_has_no_account() {
        let storage = Storage::open(":memory:").unwrap();
        assert_eq!(storage.load_account().unwrap(), None);
        assert!(storage.load_positions().unwrap().is_empty());
        assert!(storage.load_trades().unwrap().is_empty());
    }

    #[test]
    fn trade_position_and_account_round_trip_exactly() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn closing_trade_deletes_the_position() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn trade_pages_filter_by_symbol_time_and_cursor() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn failed_commit_writes_nothing() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn commit_without_an_account_row_rolls_back() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn reopening_a_file_keeps_everything() {
        let db = TempDb::new("reopen");
        {
            let storage = Storage::open(db.path()).unwrap();
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
        let storage = Storage::open(db.path()).unwrap();
        assert_eq!(storage.load_account().unwrap(), Some(account()));
        assert_eq!(storage.load_trades().unwrap(), [full_trade()]);
        let stored = storage.load_positions().unwrap();
        assert_eq!(
            (stored[0].stop_loss, stored[0].take_profit),
            (None, Some(dec("3000")))
        );
        let mode: String = storage
            .lock()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn idempotency_lookup_misses_unknown_ids() {
        let storage = Storage::open(":memory:").unwrap();
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
    }

    #[test]
    fn save_levels_needs_a_stored_position() {
        let storage = Storage::open(":memory:").unwrap();
        let err = storage.save_levels(&position("BTCUSDT")).unwrap_err();
        assert!(matches!(err, ServiceError::Storage(_)));
    }

    #[test]
    fn unreadable_values_are_storage_errors() {
        let storage = Storage::open(":memory:").unwrap();
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
        drop(Storage::open(db.path()).unwrap());
        let conn = Connection::open(db.path()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Storage::open(db.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
