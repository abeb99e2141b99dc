//! Ready-made values for tests in this and downstream crates.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;

use crate::{Side, Symbol, Ticker, Trade, TradeOrigin};

/// Parses a decimal literal; panics on a typo, which is what a test wants.
#[must_use]
pub fn dec(text: &str) -> Decimal {
    // expect: fixtures are written by hand and must be valid decimals
    Decimal::from_str(text).expect("valid decimal literal")
}

/// Parses a symbol literal.
#[must_use]
pub fn symbol(text: &str) -> Symbol {
    // expect: fixtures use valid symbols
    Symbol::parse(text).expect("valid symbol literal")
}

/// A fixed instant: 2024-01-01T00:00:00Z.
#[must_use]
pub fn instant() -> DateTime<Utc> {
    // expect: a valid calendar date
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// A ticker at `price` with a one-tick spread.
#[must_use]
pub fn ticker(symbol_text: &str, price: &str) -> Ticker {
    let price = dec(price);
    Ticker {
        symbol: symbol(symbol_text),
        price,
        bid: price - dec("0.01"),
        ask: price + dec("0.01"),
        volume_24h: dec("1000"),
        change_24h_pct: Decimal::ZERO,
        updated_at: instant(),
    }
}

/// A manual buy trade of `quantity` at `price` with no fee.
#[must_use]
pub fn trade(id: u64, symbol_text: &str, price: &str, quantity: &str) -> Trade {
    let (price, quantity) = (dec(price), dec(quantity));
    Trade {
        id,
        symbol: symbol(symbol_text),
        side: Side::Buy,
        price,
        quantity,
        fee: Decimal::ZERO,
        notional: price * quantity,
        realized_pnl: Decimal::ZERO,
        executed_at: instant(),
        client_order_id: None,
        origin: TradeOrigin::Manual,
    }
}
