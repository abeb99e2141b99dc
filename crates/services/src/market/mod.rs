//! Market data: the [`MarketService`] trait, the simulated market, candles and (feature
//! `binance`) the Binance connector.

use async_trait::async_trait;
use cryptobot_domain::{Symbol, Ticker};

use crate::ServiceError;

/// The Binance market: a live exchange connector and its handle.
#[cfg(feature = "binance")]
pub mod binance;
/// The candle history and the aggregator task that stores closed candles.
#[cfg(feature = "sqlite")]
pub mod candle_history;
/// OHLCV candles aggregated from the tickers: the pure book and the history query.
pub mod candles;
/// `[market]`: the market's settings, the simulator's and the Binance connector's.
pub mod config;
/// Observable health of a market feed.
pub mod feed_state;
/// The latest-ticker map both market sources serve from.
pub mod latest;
/// The pure seeded random walk behind the simulated market.
pub mod price_model;
/// The simulated market: feed actor and handle.
pub mod simulated;

#[cfg(feature = "binance")]
pub use binance::{BinanceFeed, BinanceMarket};
#[cfg(feature = "sqlite")]
pub use candle_history::{CandleAggregator, CandleHistory};
pub use candles::{CandleBook, CandleQuery};
pub use config::{BinanceConfig, BinanceStream, MarketConfig, MarketSource};
pub use feed_state::{FeedState, FeedStatus};
pub use latest::{LatestTickers, ServesLatestTickers};
pub use simulated::{SimulatedFeed, SimulatedMarket};

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
