//! Domain layer of cryptobot: the vocabulary every other layer speaks.
//!
//! It provides validated value types (symbols, sides, order sizes), the market, trading and portfolio
//! models, signals, alerts, and the one [`Event`] enum that flows from the services to the clients.
//! Money and quantities are [`rust_decimal::Decimal`] and travel over the wire as JSON strings.
//!
//! May depend on: serde, rust_decimal, chrono, thiserror, and utoipa behind the `openapi` feature
//! (a derive of the types' schemas for the server's OpenAPI document: no I/O). Must not depend on:
//! tokio, actix, any I/O, or any other cryptobot crate. Everything here is pure and synchronous.

/// The auto-trading state (pause / resume) and the force-exit command.
pub mod bot;
/// The one error type of the domain layer.
pub mod error;
/// Channels and the event enum published on the event bus.
pub mod event;
/// Pre-built values for tests (behind the `fixtures` feature).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
/// Market data: tickers.
pub mod market;
/// Money helpers: decimal parsing and rounding rules.
pub mod money;
/// OpenAPI schemas of the wire forms (behind the `openapi` feature).
#[cfg(feature = "openapi")]
pub mod openapi;
/// Orders with a lifecycle: types, status, validation, updates.
pub mod order;
/// Trading results: per symbol and per UTC day.
pub mod performance;
/// Positions, their valuation and the portfolio summary.
pub mod portfolio;
/// Trading signals and alerts.
pub mod signal;
/// Symbols and other validated identifiers.
pub mod symbol;
/// Trade requests and executed trades.
pub mod trade;

pub use bot::{BotState, ForceExitRequest, TradingState};
pub use error::DomainError;
pub use event::{Channel, Event};
pub use market::{Candle, Interval, Ticker};
pub use order::{
    Order, OrderEventKind, OrderFields, OrderInput, OrderPage, OrderQuery, OrderQueryInput,
    OrderRef, OrderRequest, OrderStatus, OrderType, OrderUpdate, StatusFilter, TimeInForce,
};
pub use performance::{
    DailyProfit, Performance, PerformanceStats, StatsAccumulator, SymbolPerformance,
};
pub use portfolio::{
    LevelChange, LevelInput, PortfolioSummary, Position, PositionUpdate, PositionUpdateInput,
    PositionValuation, Reserved, ReservedQuantity,
};
pub use signal::{Alert, AlertType, Severity, Signal, SignalAction};
pub use symbol::{ClientOrderId, Symbol};
pub use trade::{
    BoughtCoin, OrderSize, Side, SizeText, Trade, TradeInput, TradeOrigin, TradePage, TradeQuery,
    TradeRequest,
};
