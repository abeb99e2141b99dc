use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Symbol;

/// What a strategy recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalAction {
    /// Open or add to a position.
    Buy,
    /// Close the position.
    Sell,
    /// Do nothing.
    Hold,
}

/// A strategy's recommendation for one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The pair.
    pub symbol: Symbol,
    /// Buy, sell or hold.
    pub action: SignalAction,
    /// Name of the strategy that produced it, e.g. `sma_crossover`.
    pub strategy: String,
    /// Price the signal was computed at.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Strength from 0 to 1.
    #[serde(with = "rust_decimal::serde::str")]
    pub confidence: Decimal,
    /// Human-readable explanation.
    pub reason: String,
    /// When it was generated.
    pub generated_at: DateTime<Utc>,
}

/// Kind of an alert; stable snake_case names on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    /// A stop-loss level was crossed and the position sold.
    StopLossTriggered,
    /// A take-profit level was crossed and the position sold.
    TakeProfitTriggered,
    /// The price moved more than the configured threshold within the window.
    PriceMove,
    /// A trade command was rejected.
    TradeRejected,
    /// A symbol's market feed delivered no update for longer than allowed.
    FeedStalled,
    /// A stalled feed delivers again.
    FeedResumed,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// A notable condition for people and bots watching the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Kind of the alert.
    pub alert_type: AlertType,
    /// Urgency.
    pub severity: Severity,
    /// Human-readable text.
    pub message: String,
    /// The pair concerned, if any.
    pub symbol: Option<Symbol>,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
}
