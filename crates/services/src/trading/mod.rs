//! Trading: the [`TradeService`] and [`PortfolioService`] traits and the paper trading engine.

use async_trait::async_trait;
use cryptobot_domain::{
    Candle, DailyProfit, Interval, Order, OrderPage, OrderQuery, OrderRef, OrderRequest,
    Performance, PortfolioSummary, Position, PositionUpdate, Symbol, Trade, TradePage, TradeQuery,
    TradeRequest,
};
use serde::{Deserialize, Serialize};

use crate::ServiceError;

/// Resting orders: when a ticker fills or triggers them, what they reserve.
pub mod book;
/// `[trading]`: the paper account's settings and the auto-trader's.
pub mod config;
/// The paper trading engine actor.
#[cfg(feature = "sqlite")]
pub mod engine;
/// The cloneable handle implementing [`TradeService`] and [`PortfolioService`].
#[cfg(feature = "sqlite")]
pub mod handle;
/// The pure books: cash, positions with cost basis, realized profit.
pub mod ledger;
/// Pure order matching: request and ticker to fill or rejection.
pub mod matching;
/// Storage of trades, positions, orders and the account: SQLite or PostgreSQL, fenced.
#[cfg(feature = "sqlite")]
pub mod storage;

pub use config::TradingConfig;
#[cfg(feature = "sqlite")]
pub use handle::PaperTrading;
pub use ledger::{Account, Ledger};
pub use matching::{Fill, MatchRules};
#[cfg(feature = "sqlite")]
pub use storage::{Storage, StorageBackend, StoredTrade};

/// The result of a trade command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The committed trade.
    pub trade: Trade,
    /// True when the command repeated an earlier `client_order_id` and this is the original trade;
    /// nothing was executed this time.
    pub replayed: bool,
}

/// The result of placing an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The order as it stands after placing: `new` (resting), or already `filled`, `expired`
    /// or `rejected`.
    pub order: Order,
    /// True when the `client_order_id` was used before for this order and this is its current
    /// state; nothing was placed this time.
    pub replayed: bool,
}

/// The open orders at one moment, with the last `seq` of the `orders` channel they include: every
/// `order_update` with a larger `seq` is newer than this snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOrders {
    /// Open orders, oldest first.
    pub orders: Vec<Order>,
    /// Last `seq` of `orders` at the snapshot.
    pub seq: u64,
}

fn orders_unsupported() -> ServiceError {
    ServiceError::Unavailable("this trade service takes no orders".to_owned())
}

fn no_trade_log() -> ServiceError {
    ServiceError::Unavailable("this trade service keeps no trade log".to_owned())
}

/// Executes trades.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TradeService: Send + Sync {
    /// Executes a market order; returns only after the trade is durably committed.
    ///
    /// # Errors
    /// Any [`ServiceError`] rejection; on error nothing was executed.
    async fn execute(&self, request: TradeRequest) -> Result<Execution, ServiceError>;

    /// Returns one page of the trades matching `query` (newest first, or oldest first with
    /// `after_id`); `query.limit` is clamped to 1-1000.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn trades(&self, query: TradeQuery) -> Result<TradePage, ServiceError>;

    /// Commits one small write to the storage the trades go to, so readiness sees a full disk
    /// or a read-only file before a trade fails with `storage_error`. The default succeeds: a
    /// trade service without storage of its own (a gateway's forwarder, a test double) has
    /// nothing to probe.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the write fails, [`ServiceError::Unavailable`].
    async fn probe_storage(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    /// Returns up to `limit` of the most recent trades, newest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn recent_trades(&self, limit: usize) -> Result<Vec<Trade>, ServiceError> {
        Ok(self.trades(TradeQuery::latest(limit)).await?.trades)
    }

    /// Sums the trade log per symbol and in total (`GET /api/v1/performance`). The default
    /// answers `unavailable`, for trade services without a trade log.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn performance(&self) -> Result<Performance, ServiceError> {
        Err(no_trade_log())
    }

    /// Sums the trades per UTC day over the last `days` days, today included, newest first;
    /// days without trades have no row. The default answers `unavailable`.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn daily_profit(&self, days: u32) -> Result<Vec<DailyProfit>, ServiceError> {
        let _ = days;
        Err(no_trade_log())
    }

    /// Places an order; returns only after it (and a fill it got at once) is committed. The
    /// default answers `unavailable`, for trade services that take market orders only.
    ///
    /// # Errors
    /// Any [`ServiceError`] rejection; on error nothing was placed.
    async fn place_order(&self, request: OrderRequest) -> Result<Placement, ServiceError> {
        let _ = request;
        Err(orders_unsupported())
    }

    /// Cancels an open order; returns it canceled, after the cancel is committed.
    ///
    /// # Errors
    /// [`ServiceError::UnknownOrder`], [`ServiceError::OrderNotOpen`], or a failure.
    async fn cancel_order(&self, order: OrderRef) -> Result<Order, ServiceError> {
        let _ = order;
        Err(orders_unsupported())
    }

    /// Cancels every open order (of `symbol` only, when given); returns them canceled.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn cancel_all_orders(&self, symbol: Option<Symbol>) -> Result<Vec<Order>, ServiceError> {
        let _ = symbol;
        Err(orders_unsupported())
    }

    /// Returns one page of the orders matching `query`; `query.limit` is clamped to 1-1000.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn orders(&self, query: OrderQuery) -> Result<OrderPage, ServiceError> {
        let _ = query;
        Err(orders_unsupported())
    }

    /// Returns the open orders with the `seq` of the `orders` channel they are current at.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`].
    async fn open_orders(&self) -> Result<OpenOrders, ServiceError> {
        Err(orders_unsupported())
    }

    /// Returns candle history, oldest first (the open candle last when the query reaches now).
    /// The default answers `unavailable`.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn candles(
        &self,
        query: crate::market::CandleQuery,
    ) -> Result<Vec<Candle>, ServiceError> {
        let _ = query;
        Err(ServiceError::Unavailable(
            "this trade service keeps no candles".to_owned(),
        ))
    }

    /// Returns the open candle of `symbol` at `interval`, if any.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`].
    async fn open_candle(
        &self,
        symbol: Symbol,
        interval: Interval,
    ) -> Result<Option<Candle>, ServiceError> {
        let _ = (symbol, interval);
        Err(ServiceError::Unavailable(
            "this trade service keeps no candles".to_owned(),
        ))
    }
}

/// Reads and adjusts the paper account.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PortfolioService: Send + Sync {
    /// Returns cash and positions valued at the latest prices.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] when the engine is stopped.
    async fn summary(&self) -> Result<PortfolioSummary, ServiceError>;

    /// Sets or clears a position's stop-loss / take-profit.
    ///
    /// # Errors
    /// [`ServiceError::NoPosition`], a domain error for invalid levels, or a storage error.
    async fn update_position(
        &self,
        symbol: Symbol,
        update: PositionUpdate,
    ) -> Result<Position, ServiceError>;
}
