//! Trading: the [`TradeService`] and [`PortfolioService`] traits and the paper trading engine.

use async_trait::async_trait;
use cryptobot_domain::{PortfolioSummary, Position, PositionUpdate, Symbol, Trade, TradeRequest};

use crate::ServiceError;

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

    /// Returns up to `limit` of the most recent trades, newest first.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] or [`ServiceError::Unavailable`].
    async fn recent_trades(&self, limit: usize) -> Result<Vec<Trade>, ServiceError>;
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
