//! Durable storage of the paper account: the trade log, the open positions, the orders, the
//! account row, candles and the engine's settings, behind one trait with two backends (an
//! embedded SQLite file, or a PostgreSQL database), both fenced in the database.
//!
//! The promise is the same in both: a trade, its position change, its order and its idempotency
//! record (the trade row's `client_order_id`) are committed in one transaction before the engine
//! acknowledges it. Every write transaction first reads the fence row (`engine_fence`) and rolls
//! back with [`ServiceError::Fenced`] when its epoch is no longer the one this storage acquired
//! ([`StorageBackend::acquire_fence`]), so a former engine that wakes up after a successor took
//! over commits nothing.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use cryptobot_domain::{
    Candle, ClientOrderId, DailyProfit, Interval, Order, OrderPage, OrderQuery, OrderSize,
    Performance, Position, StatsAccumulator, Symbol, SymbolPerformance, Trade, TradePage,
    TradeQuery,
};
use rust_decimal::Decimal;

use super::ledger::Account;
use crate::ServiceError;

/// The rule for tests that need a real PostgreSQL: skip with a message, fail under `CI=true`.
#[cfg(all(test, feature = "postgres"))]
pub(crate) mod needs_postgres;
/// The PostgreSQL backend.
#[cfg(feature = "postgres")]
pub mod postgres;
/// The SQLite backend.
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStorage;
pub use sqlite::SqliteStorage;

/// A trade as recorded, with the size its order asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrade {
    /// The trade.
    pub trade: Trade,
    /// The size of the request that produced it.
    pub size: OrderSize,
}

/// What a storage backend provides. Every method blocks on disk or network I/O: async callers
/// run them in `tokio::task::spawn_blocking`.
///
/// Writes are fenced: once [`StorageBackend::acquire_fence`] returned an epoch, every write
/// transaction checks in the database that the epoch is still current and fails with
/// [`ServiceError::Fenced`] (writing nothing) once another storage handle acquired a newer one.
/// A handle that never acquired writes unfenced (tools and tests; the engine always acquires).
pub trait StorageBackend: std::fmt::Debug + Send + Sync {
    /// Returns the account row, `None` for a new database.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn load_account(&self) -> Result<Option<Account>, ServiceError>;

    /// Writes the account row of a new account.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error, or when an account exists already;
    /// [`ServiceError::Fenced`].
    fn init_account(&self, account: &Account) -> Result<(), ServiceError>;

    /// Returns the open positions, sorted by symbol.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn load_positions(&self) -> Result<Vec<Position>, ServiceError>;

    /// Returns every trade in execution order (for replaying the books).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn load_trades(&self) -> Result<Vec<Trade>, ServiceError>;

    /// Returns up to `limit` of the newest trades, newest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn recent_trades(&self, limit: usize) -> Result<Vec<Trade>, ServiceError> {
        Ok(self.trades(&TradeQuery::latest(limit))?.trades)
    }

    /// Returns one page of the trades matching `query`: newest first, or oldest first when it has
    /// `after_id`, with `more` telling whether further trades match.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn trades(&self, query: &TradeQuery) -> Result<TradePage, ServiceError>;

    /// Returns the trade executed under `client_order_id`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn find_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<StoredTrade>, ServiceError>;

    /// Records a trade and the books it leads to in one transaction: the trade row, the new
    /// state of its symbol's position (`None` deletes the closed position) and the account row.
    /// Either all of it is durable when this returns `Ok`, or none of it is written.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails (including a duplicate trade id or
    /// client order id); [`ServiceError::Fenced`]; nothing was written then.
    fn commit_trade(
        &self,
        trade: &Trade,
        size: OrderSize,
        position: Option<&Position>,
        account: &Account,
    ) -> Result<(), ServiceError> {
        self.commit_fill(trade, size, position, account, None)
    }

    /// [`StorageBackend::commit_trade`] for the fill of an order: the order's new state (filled,
    /// with its trade id) is written in the same transaction, so a fill is never committed
    /// without its order leaving the open set, nor the other way round.
    ///
    /// # Errors
    /// As [`StorageBackend::commit_trade`]; nothing was written then.
    fn commit_fill(
        &self,
        trade: &Trade,
        size: OrderSize,
        position: Option<&Position>,
        account: &Account,
        order: Option<&Order>,
    ) -> Result<(), ServiceError>;

    /// Writes orders (new ones or their new state) in one transaction.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails (a client order id used by another order
    /// included); [`ServiceError::Fenced`]; nothing was written then.
    fn save_orders(&self, orders: &[Order]) -> Result<(), ServiceError>;

    /// Returns the open orders (`new` or `triggered`), oldest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn load_open_orders(&self) -> Result<Vec<Order>, ServiceError>;

    /// Returns the largest order id used (0 for none).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    fn last_order_id(&self) -> Result<u64, ServiceError>;

    /// Returns the order placed under `client_order_id`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn find_order_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<Order>, ServiceError>;

    /// Returns the order with this id, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn find_order(&self, id: u64) -> Result<Option<Order>, ServiceError>;

    /// Returns one page of the orders matching `query`: newest first, or oldest first with
    /// `after_id`, with `more` telling whether further orders match.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ServiceError>;

    /// Sums the whole trade log per symbol (by symbol) and in total, exactly.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the log cannot be read.
    fn performance(&self) -> Result<Performance, ServiceError> {
        Ok(performance_of(&self.load_trades()?))
    }

    /// Sums the trades per UTC day from `since` on, newest day first; days without trades have
    /// no row.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the log cannot be read.
    fn daily_profit(&self, since: NaiveDate) -> Result<Vec<DailyProfit>, ServiceError>;

    /// Commits one small write (the time, into `write_probe`), as a trade would: readiness
    /// (`/readyz`) asks this so that a full disk, a read-only file, a lost database or a lost
    /// fence shows before a trade fails.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the write or its commit fails; [`ServiceError::Fenced`].
    fn probe_write(&self, at: DateTime<Utc>) -> Result<(), ServiceError>;

    /// Stores closed candles (replacing a stored one of the same symbol, interval and start).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when anything fails; [`ServiceError::Fenced`]; nothing was
    /// written then.
    fn save_candles(&self, candles: &[Candle]) -> Result<(), ServiceError>;

    /// Returns up to `limit` stored candles of `symbol` at `interval` opened before `end` (all
    /// when `None`), oldest first: the newest `limit` of them.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or an unreadable value.
    fn load_candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        end: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Candle>, ServiceError>;

    /// Stores a position's stop-loss and take-profit levels.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error or when the position is not stored;
    /// [`ServiceError::Fenced`].
    fn save_levels(&self, position: &Position) -> Result<(), ServiceError>;

    /// Returns the engine setting stored under `key`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    fn load_setting(&self, key: &str) -> Result<Option<String>, ServiceError>;

    /// Stores (or replaces) the engine setting `key`.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error; [`ServiceError::Fenced`].
    fn save_setting(&self, key: &str, value: &str) -> Result<(), ServiceError>;

    /// Takes the fence: increments the epoch in the database and returns it; from now on this
    /// handle's writes commit only while the epoch stays this one. On PostgreSQL the increment
    /// waits for the write transactions in flight (they hold the fence row `FOR SHARE`), so once
    /// it returned no write of an older epoch can commit any more.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] on a database error.
    fn acquire_fence(&self) -> Result<u64, ServiceError>;

    /// The epoch this handle holds: `None` before [`StorageBackend::acquire_fence`].
    fn fence_epoch(&self) -> Option<u64>;
}

/// The storage of the paper account, on either backend. Cloning shares the one connection (and
/// the fence epoch it holds); methods are those of [`StorageBackend`], reached through `Deref`.
#[derive(Debug, Clone)]
pub struct Storage(Arc<dyn StorageBackend>);

impl Storage {
    /// Opens the SQLite file at `path` (see [`SqliteStorage::open`]).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the file cannot be opened or holds a newer schema.
    pub fn open(path: &str) -> Result<Self, ServiceError> {
        SqliteStorage::open(path).map(Self::new)
    }

    /// Connects to the PostgreSQL database at `url` (see [`PostgresStorage::open`]).
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the database cannot be reached or holds a newer schema.
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str) -> Result<Self, ServiceError> {
        PostgresStorage::open(url).map(Self::new)
    }

    /// Wraps a backend.
    pub fn new(backend: impl StorageBackend + 'static) -> Self {
        Self(Arc::new(backend))
    }
}

impl Deref for Storage {
    type Target = dyn StorageBackend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// The fence check both backends make inside a write transaction: `held` is the epoch this
/// handle acquired (0: never), `current` the one the fence row holds.
fn check_fence(held: u64, current: u64) -> Result<(), ServiceError> {
    if held == 0 || held == current {
        Ok(())
    } else {
        Err(ServiceError::Fenced { held, current })
    }
}

/// Sums trades per symbol and in total (decimals exactly, in Rust).
fn performance_of(trades: &[Trade]) -> Performance {
    let mut per_symbol: BTreeMap<Symbol, StatsAccumulator> = BTreeMap::new();
    let mut total = StatsAccumulator::default();
    for trade in trades {
        per_symbol.entry(trade.symbol.clone()).or_default().add(
            trade.side,
            trade.fee,
            trade.notional,
            trade.realized_pnl,
        );
        total.add(trade.side, trade.fee, trade.notional, trade.realized_pnl);
    }
    Performance {
        symbols: per_symbol
            .into_iter()
            .map(|(symbol, stats)| SymbolPerformance {
                symbol,
                stats: stats.finish(),
            })
            .collect(),
        total: total.finish(),
    }
}

/// Adds one trade's fee and profit to its UTC day.
fn add_to_day(
    days: &mut BTreeMap<NaiveDate, DailyProfit>,
    date: NaiveDate,
    fee: Decimal,
    pnl: Decimal,
) {
    let day = days.entry(date).or_insert(DailyProfit {
        date,
        trades: 0,
        realized_pnl: Decimal::ZERO,
        fees: Decimal::ZERO,
    });
    day.trades += 1;
    day.fees += fee;
    day.realized_pnl += pnl;
}

#[cfg(test)]
mod tests;
