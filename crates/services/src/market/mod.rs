//! Market data: the [`MarketService`] trait and the simulated market.

use async_trait::async_trait;
use cryptobot_domain::{Symbol, Ticker};

use crate::ServiceError;

/// The pure seeded random walk behind the simulated market.
pub mod price_model;
/// The simulated market: feed actor and handle.
pub mod simulated;

pub use simulated::{SimulatedFeed, SimulatedMarket, SimulatedMarketConfig};

/// Latest prices of the configured symbols.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MarketService: Send + Sync {
    /// Returns the configured symbols, in configuration order.
    fn symbols(&self) -> Vec<Symbol>;

    /// Returns the latest ticker of a symbol.
    ///
    /// # Errors
    /// [`ServiceError::UnknownSymbol`] for a symbol that is not configured,
    /// [`ServiceError::NoPrice`] before its first update.
    async fn ticker(&self, symbol: &Symbol) -> Result<Ticker, ServiceError>;

    /// Returns the latest ticker of every symbol that has one, in configuration order.
    async fn tickers(&self) -> Vec<Ticker>;
}
