//! Shared state of the REST handlers: the services behind their traits.

use std::sync::Arc;
use std::time::Instant;

use cryptobot_services::market::FeedState;
use cryptobot_services::{MarketService, PortfolioService, ServiceMetrics, TradeService};
use cryptobot_ws_gateway::Gateway;

/// What every REST handler can reach. Built once in `startup` and shared by all workers.
#[derive(Clone)]
pub struct AppState {
    /// Latest prices.
    pub market: Arc<dyn MarketService>,
    /// Trade execution.
    pub trade: Arc<dyn TradeService>,
    /// The paper account.
    pub portfolio: Arc<dyn PortfolioService>,
    /// Service counters for `/metrics`.
    pub metrics: Arc<ServiceMetrics>,
    /// Every series this node exports at `/metrics` (its own registry, see `exposition`).
    pub registry: prometheus::Registry,
    /// The WebSocket gateway, for its metrics.
    pub gateway: Gateway,
    /// When the server started, for `uptime_secs`.
    pub started_at: Instant,
    /// `market.source`, reported by `/health`.
    pub market_source: &'static str,
    /// State of the market feed (connection, last update, reconnects), for `/health` and `/metrics`.
    pub feed: FeedState,
    /// Counters of the link to Redis (`bus.backend = "redis"` only), for `/metrics` and `/health`.
    pub broker: Option<Arc<cryptobot_services::scale::BrokerMetrics>>,
    /// What this node runs; a gateway without its broker cannot trade or stream.
    pub role: crate::config::Role,
}

impl AppState {
    /// Whether the Redis link is up; `None` without Redis.
    #[must_use]
    pub fn broker_connected(&self) -> Option<bool> {
        self.broker
            .as_ref()
            .map(|broker| broker.connected.load(std::sync::atomic::Ordering::Relaxed) == 1)
    }

    /// On a gateway node, whether the engine it follows renews its lease (its liveness mark in
    /// Redis, read with every poll of the streams): the probes' cached view of the engine, which
    /// never waits for a round trip. `None` on the other roles, which ask their own engine.
    #[must_use]
    pub fn followed_engine_alive(&self) -> Option<bool> {
        match (&self.broker, self.role) {
            (Some(broker), crate::config::Role::Gateway) => Some(
                broker
                    .engine_alive
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 1,
            ),
            _ => None,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("market_source", &self.market_source)
            .finish_non_exhaustive()
    }
}
