//! Trading: the [`TradeService`] and [`PortfolioService`] traits and the paper trading engine.

use async_trait::async_trait;
use cryptobot_domain::{
    PortfolioSummary, Position, PositionUpdate, Symbol, Trade, TradePage, TradeQuery, TradeRequest,
};

use crate::ServiceError;

/// The paper trading engine actor and its configuration.
pub mod engine;
/// The cloneable handle implementing [`TradeService`] and [`PortfolioService`].
pub mod handle;
/// The pure books: cash, positions with cost basis, realized profit.
pub mod ledger;
/// Pure order matching: request and ticker to fill or rejection.
pub mod matching;
/// SQLite storage of trades, positions and the account.
pub mod storage;

pub use engine::PaperTradingConfig;
pub use handle::PaperTrading;
pub use ledger::{Account, Ledger};
pub use matching::Fill;
pub use storage::{Storage, StoredTrade};

/// The result of a trade command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The committed trade.
    pub trade: Trade,
    /// True when the command repeated an earlier `client_order_id` and this is the original trade;
    /// nothing was executed this time.
    pub replayed: bool,
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

    /// Returns up to `limit` of the most recent trades, newest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn recent_trades(&self, limit: usize) -> Result<Vec<Trade>, ServiceError> {
        Ok(self.trades(TradeQuery::latest(limit)).await?.trades)
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
