//! The bot's own trading switch: whether the auto-trader follows signals, who changed it, when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ClientOrderId, Symbol};

/// Whether the auto-trader acts on signals. Paused stops only the bot's own trades: stop-loss,
/// take-profit, resting orders and manual commands keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TradingState {
    /// The auto-trader follows signals (entries and signal exits).
    Running,
    /// The auto-trader places no trade.
    Paused,
}

impl TradingState {
    /// Returns `"running"` or `"paused"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }

    /// The state `trading.auto_trade` starts with when none is stored.
    #[must_use]
    pub const fn from_auto_trade(auto_trade: bool) -> Self {
        if auto_trade {
            Self::Running
        } else {
            Self::Paused
        }
    }
}

/// The auto-trading state with who changed it last and when (`None` for both while it is the
/// configured initial state, never changed at runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BotState {
    /// `running` or `paused`.
    pub state: TradingState,
    /// When it was last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub changed_at: Option<DateTime<Utc>>,
    /// The principal (token name) that changed it last.
    pub changed_by: Option<String>,
}

impl BotState {
    /// The state as configured, never changed.
    #[must_use]
    pub const fn initial(state: TradingState) -> Self {
        Self {
            state,
            changed_at: None,
            changed_by: None,
        }
    }

    /// Whether the auto-trader may trade.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.state == TradingState::Running
    }
}

/// A command to sell the whole position of `symbol` at market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceExitRequest {
    /// The position to close.
    pub symbol: Symbol,
    /// Idempotency key: a repeat returns the first exit's trade.
    pub client_order_id: Option<ClientOrderId>,
    /// The principal that sent it, for the trade's log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_their_names() {
        for state in [TradingState::Running, TradingState::Paused] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert_eq!(TradingState::from_auto_trade(false), TradingState::Paused);
        let json = serde_json::to_value(BotState::initial(TradingState::Running)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state":"running","changed_at":null,"changed_by":null})
        );
    }
}
