//! Order matching for the paper account: turns a market order and the latest ticker into a fill
//! or the reason it cannot be filled. Pure and synchronous.

use chrono::{DateTime, Utc};
use cryptobot_domain::money::{floor_quantity, round_money};
use cryptobot_domain::{OrderSize, Side, Ticker, Trade, TradeRequest};
use rust_decimal::Decimal;

use super::ledger::Ledger;
use crate::ServiceError;

/// The account's rules a fill must obey (the engine builds them from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchRules {
    /// Fee charged on a fill's notional.
    pub fee_rate: Decimal,
    /// Smallest notional of a fill; smaller ones are `order_too_small`.
    pub min_notional: Decimal,
}

/// What a market order fills at; everything a [`cryptobot_domain::Trade`] needs except its id,
/// time and origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// Execution price: the ticker's last price.
    pub price: Decimal,
    /// Base quantity, rounded down to the quantity scale.
    pub quantity: Decimal,
    /// `round_money(price * quantity)`.
    pub notional: Decimal,
    /// `round_money(notional * fee_rate)`.
    pub fee: Decimal,
    /// The profit this fill realizes, fees included.
    pub realized_pnl: Decimal,
}

impl Fill {
    /// The trade this fill of `request` makes, numbered `id` and executed at `executed_at`.
    #[must_use]
    pub fn into_trade(self, id: u64, request: &TradeRequest, executed_at: DateTime<Utc>) -> Trade {
        Trade {
            id,
            symbol: request.symbol().clone(),
            side: request.side(),
            price: self.price,
            quantity: self.quantity,
            fee: self.fee,
            notional: self.notional,
            realized_pnl: self.realized_pnl,
            executed_at,
            client_order_id: request.client_order_id().cloned(),
            origin: request.origin(),
        }
    }
}

/// Fills a market order at `ticker.price` against the books.
///
/// Sizes: a buy by quantity takes that quantity; a buy by amount spends at most the amount, fee
/// included (`amount / (price * (1 + fee_rate))`); a sell by quantity sells that quantity; a sell
/// by amount sells `amount / price`. Quantities are rounded down to 8 places.
///
/// # Errors
/// - [`ServiceError::Domain`] for a zero or negative size;
/// - [`ServiceError::NoPrice`] when the ticker is for another symbol or has no positive price;
/// - [`ServiceError::OrderTooSmall`] when the quantity rounds to zero or the notional is below
///   `rules.min_notional`;
/// - [`ServiceError::InsufficientFunds`] when a buy costs more than the cash, fee included;
/// - [`ServiceError::InsufficientPosition`] when a sell asks for more than is held.
pub fn match_order(
    request: &TradeRequest,
    ticker: &Ticker,
    ledger: &Ledger,
    rules: MatchRules,
) -> Result<Fill, ServiceError> {
    let available = Available {
        cash: ledger.cash(),
        quantity: ledger.held(request.symbol()),
    };
    match_with(request, ticker, ledger, rules, available)
}

/// What a fill may spend: the cash and the quantity of the symbol not held back by open orders
/// (plus, for the fill of an order, that order's own reservation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    /// Quote cash.
    pub cash: Decimal,
    /// Base quantity of the request's symbol.
    pub quantity: Decimal,
}

/// [`match_order`] against `available` funds instead of everything the books hold.
///
/// # Errors
/// Those of [`match_order`], funds measured against `available`.
pub fn match_with(
    request: &TradeRequest,
    ticker: &Ticker,
    ledger: &Ledger,
    rules: MatchRules,
    available: Available,
) -> Result<Fill, ServiceError> {
    let size = request.size().validate()?;
    let price = ticker.price;
    if ticker.symbol != *request.symbol() || price <= Decimal::ZERO {
        return Err(ServiceError::NoPrice(request.symbol().clone()));
    }
    let cash = available.cash;
    let held = available.quantity;
    // A size so large that the arithmetic overflows can never be afforded or held.
    let too_large = || match request.side() {
        Side::Buy => ServiceError::InsufficientFunds {
            needed: Decimal::MAX,
            available: cash,
        },
        Side::Sell => ServiceError::InsufficientPosition {
            requested: match size {
                OrderSize::Quantity(q) => q,
                OrderSize::Amount(_) => Decimal::MAX,
            },
            held,
        },
    };

    let quantity = match (request.side(), size) {
        (_, OrderSize::Quantity(quantity)) => quantity,
        (Side::Buy, OrderSize::Amount(amount)) => Decimal::ONE
            .checked_add(rules.fee_rate)
            .and_then(|factor| price.checked_mul(factor))
            .and_then(|unit_cost| amount.checked_div(unit_cost))
            .ok_or_else(too_large)?,
        (Side::Sell, OrderSize::Amount(amount)) => {
            amount.checked_div(price).ok_or_else(too_large)?
        }
    };
    let quantity = floor_quantity(quantity);
    let notional = price
        .checked_mul(quantity)
        .map(round_money)
        .ok_or_else(too_large)?;
    if quantity <= Decimal::ZERO || notional < rules.min_notional {
        return Err(ServiceError::OrderTooSmall {
            notional,
            minimum: rules.min_notional,
        });
    }
    let fee = notional
        .checked_mul(rules.fee_rate)
        .map(round_money)
        .ok_or_else(too_large)?;

    match request.side() {
        Side::Buy => {
            let needed = notional.checked_add(fee).ok_or_else(too_large)?;
            if cash < needed {
                return Err(ServiceError::InsufficientFunds {
                    needed,
                    available: cash,
                });
            }
        }
        Side::Sell => {
            if held < quantity {
                return Err(ServiceError::InsufficientPosition {
                    requested: quantity,
                    held,
                });
            }
        }
    }
    let realized_pnl =
        ledger.realized_by(request.symbol(), request.side(), quantity, notional, fee)?;
    Ok(Fill {
        price,
        quantity,
        notional,
        fee,
        realized_pnl,
    })
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, instant, symbol, ticker};
    use cryptobot_domain::{DomainError, TradeOrigin};

    use super::*;

    /// The default account's rules (fee 0.1 %, minimum notional 1).
    fn config() -> MatchRules {
        MatchRules {
            fee_rate: dec("0.001"),
            min_notional: dec("1"),
        }
    }

    /// A zero or negative size is refused here, by the request's own constructor.
    fn request(side: Side, size: OrderSize) -> Result<TradeRequest, ServiceError> {
        Ok(TradeRequest::new(
            symbol("BTCUSDT"),
            side,
            size,
            None,
            TradeOrigin::Manual,
        )?)
    }

    fn qty(text: &str) -> OrderSize {
        OrderSize::Quantity(dec(text))
    }

    fn amount(text: &str) -> OrderSize {
        OrderSize::Amount(dec(text))
    }

    /// Books holding `quantity` BTCUSDT bought at `price` without fee, plus `cash`.
    fn holding(cash: &str, price: &str, quantity: &str) -> Ledger {
        let mut ledger = Ledger::new(dec(cash) + dec(price) * dec(quantity));
        let trade = cryptobot_domain::fixtures::trade(1, "BTCUSDT", price, quantity);
        ledger.apply(&trade).unwrap();
        ledger
    }

    fn fill(
        ledger: &Ledger,
        side: Side,
        size: OrderSize,
        price: &str,
    ) -> Result<Fill, ServiceError> {
        match_order(
            &request(side, size)?,
            &ticker("BTCUSDT", price),
            ledger,
            config(),
        )
    }

    #[test]
    fn buy_by_quantity_fills_at_last_price_with_fee() {
        let ledger = Ledger::new(dec("10000"));
        let got = fill(&ledger, Side::Buy, qty("0.123456789"), "40000").unwrap();
        assert_eq!(
            got,
            Fill {
                price: dec("40000"),
                quantity: dec("0.12345678"),
                notional: dec("4938.2712"),
                fee: dec("4.9382712"),
                realized_pnl: dec("-4.9382712"),
            }
        );
    }

    #[test]
    fn buy_by_amount_spends_at_most_the_amount_fee_included() {
        let ledger = Ledger::new(dec("10000"));
        let got = fill(&ledger, Side::Buy, amount("100"), "30000").unwrap();
        // 100 / (30000 * 1.001) = 0.003330003330..., floored to 8 places.
        assert_eq!(got.quantity, dec("0.00333000"));
        assert_eq!(got.notional, dec("99.9"));
        assert_eq!(got.fee, dec("0.0999"));
        assert!(got.notional + got.fee <= dec("100"));
    }

    #[test]
    fn sells_by_quantity_and_by_amount() {
        let ledger = holding("0", "100", "3");
        // TC0: by quantity: cost basis removed 100, fee 0.11
        let got = fill(&ledger, Side::Sell, qty("1"), "110").unwrap();
        assert_eq!(
            (got.quantity, got.notional, got.fee, got.realized_pnl),
            (dec("1"), dec("110"), dec("0.11"), dec("9.89"))
        );
        // TC1: by amount: 55 / 110 = 0.5
        let got = fill(&ledger, Side::Sell, amount("55"), "110").unwrap();
        assert_eq!(
            (got.quantity, got.realized_pnl),
            (dec("0.5"), dec("55") - dec("50") - dec("0.055"))
        );
        // TC2: the whole position
        let got = fill(&ledger, Side::Sell, qty("3"), "90").unwrap();
        assert_eq!(got.realized_pnl, dec("270") - dec("300") - dec("0.27"));
    }

    #[test]
    fn fees_and_notional_round_half_away_from_zero() {
        let ledger = Ledger::new(dec("10000"));
        let no_minimum = MatchRules {
            min_notional: Decimal::ZERO,
            ..config()
        };
        // TC0: notional 0.000000015 rounds up to 0.00000002; its fee (2e-11) rounds to zero.
        let got = match_order(
            &request(Side::Buy, qty("0.5")).unwrap(),
            &ticker("BTCUSDT", "0.00000003"),
            &ledger,
            no_minimum,
        )
        .unwrap();
        assert_eq!((got.notional, got.fee), (dec("0.00000002"), Decimal::ZERO));
        // TC1: fee 0.001234565 rounds half away from zero (banker's rounding would give ...56).
        let got = fill(&ledger, Side::Buy, qty("1"), "1.234565").unwrap();
        assert_eq!(got.fee, dec("0.00123457"));
    }

    #[test]
    fn rejects_every_unfillable_order() {
        let flat = Ledger::new(dec("100"));
        let held = holding("100", "10", "2");
        let too_small = |notional: &str| ServiceError::OrderTooSmall {
            notional: dec(notional),
            minimum: Decimal::ONE,
        };
        let cases: Vec<(&str, &Ledger, Side, OrderSize, &str, ServiceError)> = vec![
            // TC0: zero size
            (
                "zero quantity",
                &flat,
                Side::Buy,
                qty("0"),
                "10",
                ServiceError::Domain(DomainError::NotPositive {
                    field: "quantity",
                    value: Decimal::ZERO,
                }),
            ),
            // TC1: negative amount
            (
                "negative amount",
                &flat,
                Side::Sell,
                amount("-5"),
                "10",
                ServiceError::Domain(DomainError::NotPositive {
                    field: "amount",
                    value: dec("-5"),
                }),
            ),
            // TC2: rounds to zero quantity
            (
                "dust",
                &flat,
                Side::Buy,
                qty("0.000000001"),
                "10",
                too_small("0"),
            ),
            // TC3: below min_notional
            (
                "small",
                &flat,
                Side::Buy,
                qty("0.09"),
                "10",
                too_small("0.9"),
            ),
            // TC4: amount too small after the fee
            (
                "small amount",
                &flat,
                Side::Buy,
                amount("1"),
                "10",
                too_small("0.9990009"),
            ),
            // TC5: more than the cash, fee included
            (
                "poor",
                &flat,
                Side::Buy,
                qty("10"),
                "10",
                ServiceError::InsufficientFunds {
                    needed: dec("100.1"),
                    available: dec("100"),
                },
            ),
            // TC6: selling without a position
            (
                "nothing held",
                &flat,
                Side::Sell,
                qty("1"),
                "10",
                ServiceError::InsufficientPosition {
                    requested: dec("1"),
                    held: Decimal::ZERO,
                },
            ),
            // TC7: selling more than held
            (
                "oversell",
                &held,
                Side::Sell,
                amount("30"),
                "10",
                ServiceError::InsufficientPosition {
                    requested: dec("3"),
                    held: dec("2"),
                },
            ),
            // TC8: no usable price
            (
                "zero price",
                &flat,
                Side::Buy,
                qty("1"),
                "0",
                ServiceError::NoPrice(symbol("BTCUSDT")),
            ),
            // TC9: absurd size overflows instead of panicking
            (
                "overflow",
                &flat,
                Side::Buy,
                qty("79000000000000000000000000000"),
                "1000",
                ServiceError::InsufficientFunds {
                    needed: Decimal::MAX,
                    available: dec("100"),
                },
            ),
        ];
        for (name, ledger, side, size, price, want) in cases {
            assert_eq!(fill(ledger, side, size, price), Err(want), "{name}");
        }
    }

    #[test]
    fn ticker_of_another_symbol_is_no_price() {
        let ledger = Ledger::new(dec("100"));
        let err = match_order(
            &request(Side::Buy, qty("1")).unwrap(),
            &ticker("ETHUSDT", "10"),
            &ledger,
            config(),
        )
        .unwrap_err();
        assert_eq!(err, ServiceError::NoPrice(symbol("BTCUSDT")));
    }

    #[test]
    fn a_fill_applies_cleanly_to_the_books_it_was_matched_against() {
        let mut ledger = holding("1000", "100", "1.5");
        let got = fill(&ledger, Side::Sell, qty("0.7"), "123.45").unwrap();
        let trade = got.into_trade(2, &request(Side::Sell, qty("0.7")).unwrap(), instant());
        assert_eq!(
            (trade.id, trade.symbol.as_str(), trade.side, trade.origin),
            (2, "BTCUSDT", Side::Sell, TradeOrigin::Manual)
        );
        ledger.apply(&trade).unwrap();
        assert!(ledger.balances());
    }
}
