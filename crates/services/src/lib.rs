//! Services layer of cryptobot: what the bot does, behind traits.
//!
//! It provides the service traits the gateway and the server program against ([`MarketService`],
//! [`TradeService`], [`PortfolioService`], [`EventBus`]) and their real implementations: the
//! simulated market feed, the paper trading engine with its SQLite storage, the signal strategy,
//! the auto-trader and the alert monitor. Every state change is published on the event bus.
//!
//! The core (bus, clock, error, backoff, the market and trading traits, pure matching and books,
//! metrics, signals, alerts, the simulated market, the in-memory bus, and the configuration of
//! every section they serve, adapters' included) builds with no feature. The
//! adapters are features, all on by default:
//! - `sqlite`: the paper trading engine (`trading::PaperTrading`), its storage and the candle
//!   history (bundled SQLite through rusqlite);
//! - `redis`: scale-out through Redis (`scale`);
//! - `binance`: the live Binance connector (tokio-tungstenite over rustls with ring).
//!
//! An embedder of the gateway (`cryptobot-ws-gateway`, which depends on this crate with
//! `default-features = false`) compiles none of them: `cargo tree -p cryptobot-ws-gateway -e
//! normal --prefix none | sort -u | wc -l` counts 179 lines (140 distinct crates) against 270
//! (205) before the features, and a clean debug build of it takes 31 s instead of 52 s
//! (docs/architecture.md has the measurement).
//!
//! May depend on: the domain crate, tokio, serde and serde_json (configuration values given as
//! JSON in the environment, the broker's wire format); behind `sqlite` rusqlite, behind `binance`
//! tokio-tungstenite with rustls only as the *client* of an exchange's market data stream, behind
//! `redis` the `redis` crate as the client of the event broker. Must not depend on: actix or any
//! HTTP or WebSocket *serving*; the gateway and the server sit above this layer. The core must not
//! import an adapter. Mocks of the traits are generated with mockall behind the `mocks` feature.

/// Alert monitor: price moves and stalled feeds.
pub mod alerts;
/// Reconnect delays with jitter, for every reconnecting client.
pub mod backoff;
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
/// Scale-out through Redis: stream publisher, follower bus, forwarded commands (feature `redis`).
#[cfg(feature = "redis")]
pub mod scale;
/// Signal strategies and the auto-trader.
pub mod signals;
/// Trade and portfolio traits, the paper trading engine and its storage.
pub mod trading;

pub use bus::{
    BrokerHealth, BusBackend, BusConfig, Envelope, EventBus, HistoryLimits, InMemoryBus, Inherited,
    Replay, Subscription,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ServiceError;
pub use market::MarketService;
pub use metrics::ServiceMetrics;
pub use trading::{Execution, ForceExit, OpenOrders, Placement, PortfolioService, TradeService};
