//! The latest ticker of each configured symbol, shared by a feed (the writer) and every handle
//! of its market (the readers). Every market handle serves [`MarketService`] from it through one
//! implementation, so they all answer alike.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};

use async_trait::async_trait;
use cryptobot_domain::{Symbol, Ticker};

use super::MarketService;
use crate::ServiceError;

/// Latest tickers of a fixed list of symbols. Cloning shares the same map. The lock is only held
/// to copy tickers in or out, never across an await.
#[derive(Debug, Clone)]
pub struct LatestTickers {
    symbols: Arc<[Symbol]>,
    latest: Arc<RwLock<HashMap<Symbol, Ticker>>>,
}

impl LatestTickers {
    /// Creates the map for `symbols` (a symbol listed twice is kept once, in first position),
    /// seeded with `initial` tickers.
    #[must_use]
    pub fn new(symbols: Vec<Symbol>, initial: impl IntoIterator<Item = Ticker>) -> Self {
        let mut unique: Vec<Symbol> = Vec::with_capacity(symbols.len());
        for symbol in symbols {
            if !unique.contains(&symbol) {
                unique.push(symbol);
            }
        }
        let initial = initial
            .into_iter()
            .map(|ticker| (ticker.symbol.clone(), ticker))
            .collect();
        Self {
            symbols: unique.into(),
            latest: Arc::new(RwLock::new(initial)),
        }
    }

    /// The symbols, in configuration order.
    #[must_use]
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// The latest ticker of `symbol`.
    ///
    /// # Errors
    /// [`ServiceError::UnknownSymbol`] for a symbol not configured, [`ServiceError::NoPrice`]
    /// before its first ticker.
    pub fn ticker(&self, symbol: &Symbol) -> Result<Ticker, ServiceError> {
        if !self.symbols.contains(symbol) {
            return Err(ServiceError::UnknownSymbol(symbol.clone()));
        }
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(symbol)
            .cloned()
            .ok_or_else(|| ServiceError::NoPrice(symbol.clone()))
    }

    /// The latest ticker of every symbol that has one, in configuration order.
    #[must_use]
    pub fn tickers(&self) -> Vec<Ticker> {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        self.symbols
            .iter()
            .filter_map(|symbol| latest.get(symbol).cloned())
            .collect()
    }

    /// Write access for the feed; hold it only to copy tickers in.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, HashMap<Symbol, Ticker>> {
        self.latest.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A market handle that answers from a [`LatestTickers`] map its feed writes; it gets
/// [`MarketService`] from the one implementation below.
pub trait ServesLatestTickers {
    /// The map the handle serves from.
    fn latest(&self) -> &LatestTickers;
}

#[async_trait]
impl<T: ServesLatestTickers + Send + Sync> MarketService for T {
    fn symbols(&self) -> Vec<Symbol> {
        self.latest().symbols().to_vec()
    }

    async fn ticker(&self, symbol: &Symbol) -> Result<Ticker, ServiceError> {
        self.latest().ticker(symbol)
    }

    async fn tickers(&self) -> Vec<Ticker> {
        self.latest().tickers()
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures;

    use super::*;

    #[test]
    fn serves_configured_symbols_in_order_and_refuses_others() {
        let btc = fixtures::symbol("BTCUSDT");
        let eth = fixtures::symbol("ETHUSDT");
        let latest = LatestTickers::new(
            vec![eth.clone(), btc.clone(), eth.clone()],
            [fixtures::ticker("BTCUSDT", "100")],
        );
        assert_eq!(latest.symbols(), [eth.clone(), btc.clone()]);
        assert_eq!(latest.ticker(&btc).unwrap().price, fixtures::dec("100"));
        // TC1: configured but not priced yet
        assert_eq!(latest.ticker(&eth), Err(ServiceError::NoPrice(eth.clone())));
        // TC2: not configured
        let doge = fixtures::symbol("DOGEUSDT");
        assert_eq!(latest.ticker(&doge), Err(ServiceError::UnknownSymbol(doge)));
        latest
            .write()
            .insert(eth.clone(), fixtures::ticker("ETHUSDT", "5"));
        let symbols: Vec<Symbol> = latest.tickers().into_iter().map(|t| t.symbol).collect();
        assert_eq!(symbols, [eth, btc]);
    }
}
