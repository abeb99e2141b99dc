//! Services layer of cryptobot: what the bot does, behind traits.
//!
//! It provides the service traits the gateway and the server program against ([`MarketService`],
//! [`TradeService`], [`PortfolioService`], [`EventBus`]) and their real implementations: the
//! simulated market feed, the paper trading engine with its SQLite storage, the signal strategy,
//! the auto-trader and the alert monitor. Every state change is published on the event bus.
//!
//! May depend on: the domain crate, tokio, rusqlite, serde, and tokio-tungstenite with rustls only
//! as the *client* of an exchange's market data stream, and the `redis` crate as the client of the
//! event broker. Must not depend on: actix or any HTTP or
//! WebSocket *serving*; the gateway and the server sit above this layer. Mocks of the traits are
//! generated with mockall behind the `mocks` feature.

/// Alert monitor: price moves and stalled feeds.
pub mod alerts;
/// The event bus and its in-process implementation.
pub mod bus;
/// Injected time.
pub mod clock;
/// How configuration values are read: decimal strings, and lists from TOML or the environment.
pub mod config;
/// The one error type of the services layer.
pub mod error;
/// Market data trait and the simulated market.
pub mod market;
/// Counters exported at `/metrics`.
pub mod metrics;
/// Scale-out through Redis: stream publisher, follower bus, forwarded commands.
pub mod scale;
/// Signal strategies and the auto-trader.
pub mod signals;
/// Trade and portfolio traits, the paper trading engine and its storage.
pub mod trading;

pub use bus::{Envelope, EventBus, HistoryLimits, InMemoryBus, Replay};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ServiceError;
pub use market::MarketService;
pub use metrics::ServiceMetrics;
pub use trading::{Execution, OpenOrders, Placement, PortfolioService, TradeService};
