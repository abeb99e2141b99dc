use std::fmt;

use serde::{Deserialize, Serialize};

use crate::market::{Candle, Interval};
use crate::{Alert, BotState, OrderUpdate, PortfolioSummary, Signal, Symbol, Ticker, Trade};

/// A named stream of events; sequence numbers are counted per channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `ticker:<SYMBOL>`: every ticker update of one symbol.
    Ticker(Symbol),
    /// `trades`: every executed trade.
    Trades,
    /// `portfolio`: every change of cash or positions.
    Portfolio,
    /// `signals`: every strategy signal.
    Signals,
    /// `alerts`: every alert.
    Alerts,
    /// `orders`: every change of an order's status.
    Orders,
    /// `candles:<SYMBOL>:<interval>`: the open candle's updates and each closed candle.
    Candles(Symbol, Interval),
    /// `bot`: every change of the auto-trading state (pause / resume).
    Bot,
}

impl Channel {
    /// Parses a channel name such as `ticker:BTCUSDT` or `trades`.
    ///
    /// # Errors
    /// The name is returned back when it names no channel; an invalid symbol gives its error.
    pub fn parse(name: &str) -> Result<Self, ChannelParseError> {
        match name {
            "trades" => Ok(Self::Trades),
            "portfolio" => Ok(Self::Portfolio),
            "signals" => Ok(Self::Signals),
            "alerts" => Ok(Self::Alerts),
            "orders" => Ok(Self::Orders),
            "bot" => Ok(Self::Bot),
            _ => {
                if let Some(rest) = name.strip_prefix("candles:") {
                    let (symbol, interval) =
                        rest.rsplit_once(':').ok_or(ChannelParseError::Unknown)?;
                    let interval =
                        Interval::from_name(interval).ok_or(ChannelParseError::Unknown)?;
                    return Symbol::parse(symbol)
                        .map(|symbol| Self::Candles(symbol, interval))
                        .map_err(ChannelParseError::Symbol);
                }
                match name.strip_prefix("ticker:") {
                    Some(symbol) => Symbol::parse(symbol)
                        .map(Self::Ticker)
                        .map_err(ChannelParseError::Symbol),
                    None => Err(ChannelParseError::Unknown),
                }
            }
        }
    }
}

/// Why a channel name was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelParseError {
    /// Not one of the channel names.
    Unknown,
    /// `ticker:` followed by an invalid symbol.
    Symbol(crate::DomainError),
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ticker(symbol) => write!(f, "ticker:{symbol}"),
            Self::Trades => f.write_str("trades"),
            Self::Portfolio => f.write_str("portfolio"),
            Self::Signals => f.write_str("signals"),
            Self::Alerts => f.write_str("alerts"),
            Self::Orders => f.write_str("orders"),
            Self::Candles(symbol, interval) => write!(f, "candles:{symbol}:{}", interval.as_str()),
            Self::Bot => f.write_str("bot"),
        }
    }
}

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(|_| serde::de::Error::custom("unknown channel"))
    }
}

/// Every state change the services publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A new market state for one symbol.
    Ticker(Ticker),
    /// A trade was executed and committed.
    TradeExecuted(Trade),
    /// Cash or positions changed.
    PortfolioChanged(PortfolioSummary),
    /// A strategy produced a signal.
    Signal(Signal),
    /// An alert was raised.
    Alert(Alert),
    /// An order was placed or changed status (committed before it is published).
    OrderUpdated(Box<OrderUpdate>),
    /// The open candle changed, or a candle closed.
    Candle(Candle),
    /// The auto-trading state changed (committed before it is published).
    BotStateChanged(BotState),
}

impl Event {
    /// Returns the channel this event is published on.
    #[must_use]
    pub fn channel(&self) -> Channel {
        match self {
            Self::Ticker(ticker) => Channel::Ticker(ticker.symbol.clone()),
            Self::TradeExecuted(_) => Channel::Trades,
            Self::PortfolioChanged(_) => Channel::Portfolio,
            Self::Signal(_) => Channel::Signals,
            Self::Alert(_) => Channel::Alerts,
            Self::OrderUpdated(_) => Channel::Orders,
            Self::Candle(candle) => Channel::Candles(candle.symbol.clone(), candle.interval),
            Self::BotStateChanged(_) => Channel::Bot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for name in [
            "ticker:BTCUSDT",
            "trades",
            "portfolio",
            "signals",
            "alerts",
            "orders",
            "bot",
            "candles:BTCUSDT:1m",
            "candles:ETHUSDT:1d",
        ] {
            assert_eq!(Channel::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(Channel::parse("order"), Err(ChannelParseError::Unknown));
        assert_eq!(
            Channel::parse("candles:BTCUSDT:2m"),
            Err(ChannelParseError::Unknown)
        );
        assert_eq!(
            Channel::parse("candles:BTCUSDT"),
            Err(ChannelParseError::Unknown)
        );
        assert!(matches!(
            Channel::parse("candles:btc:1m"),
            Err(ChannelParseError::Symbol(_))
        ));
        assert!(matches!(
            Channel::parse("ticker:btc"),
            Err(ChannelParseError::Symbol(_))
        ));
    }
}
