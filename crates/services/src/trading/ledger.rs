//! The paper account's books: cash, positions with an exact cost basis, and profit, changed only
//! by applying committed trades.

use std::collections::BTreeMap;

use cryptobot_domain::money::round_money;
use cryptobot_domain::{Position, Side, Symbol, Trade};
use rust_decimal::Decimal;

use crate::ServiceError;

/// The account figures that are not per position (the `account` row of the storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Cash the account started with.
    pub initial_cash: Decimal,
    /// Free quote-asset cash.
    pub cash: Decimal,
    /// Profit realized by all trades, fees included.
    pub realized_pnl: Decimal,
    /// Fees paid by all trades.
    pub fees_paid: Decimal,
    /// Number of trades applied.
    pub trade_count: u64,
}

impl Account {
    /// A fresh account holding only `initial_cash`.
    #[must_use]
    pub const fn new(initial_cash: Decimal) -> Self {
        Self {
            initial_cash,
            cash: initial_cash,
            realized_pnl: Decimal::ZERO,
            fees_paid: Decimal::ZERO,
            trade_count: 0,
        }
    }
}

/// Cash and positions of the paper account.
///
/// Invariant, exact to the last digit: `cash + sum(cost_basis) == initial_cash + realized_pnl`.
/// Every change goes through [`Ledger::apply`], which either applies a whole trade or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    account: Account,
    positions: BTreeMap<Symbol, Position>,
}

impl Ledger {
    /// A fresh account holding only `initial_cash`.
    #[must_use]
    pub const fn new(initial_cash: Decimal) -> Self {
        Self {
            account: Account::new(initial_cash),
            positions: BTreeMap::new(),
        }
    }

    /// Rebuilds the books from stored parts, without checking them (see [`Ledger::check_matches`]).
    #[must_use]
    pub fn from_parts(account: Account, positions: impl IntoIterator<Item = Position>) -> Self {
        Self {
            account,
            positions: positions
                .into_iter()
                .map(|position| (position.symbol.clone(), position))
                .collect(),
        }
    }

    /// Replays trades, in execution order, into a fresh account.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] naming the first trade that cannot be applied (selling more than
    /// held, or a recorded profit that differs from the one the books compute).
    pub fn replay<'a>(
        initial_cash: Decimal,
        trades: impl IntoIterator<Item = &'a Trade>,
    ) -> Result<Self, ServiceError> {
        let mut ledger = Self::new(initial_cash);
        for trade in trades {
            ledger.apply(trade)?;
        }
        Ok(ledger)
    }

    /// The account figures.
    #[must_use]
    pub const fn account(&self) -> &Account {
        &self.account
    }

    /// Free cash.
    #[must_use]
    pub const fn cash(&self) -> Decimal {
        self.account.cash
    }

    /// Open positions by symbol.
    #[must_use]
    pub const fn positions(&self) -> &BTreeMap<Symbol, Position> {
        &self.positions
    }

    /// The open position in `symbol`, if any.
    #[must_use]
    pub fn position(&self, symbol: &Symbol) -> Option<&Position> {
        self.positions.get(symbol)
    }

    /// Quantity held of `symbol` (zero without a position).
    #[must_use]
    pub fn held(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .get(symbol)
            .map_or(Decimal::ZERO, |position| position.quantity)
    }

    /// Returns true when `cash + sum(cost_basis) == initial_cash + realized_pnl` exactly.
    #[must_use]
    pub fn balances(&self) -> bool {
        let held: Option<Decimal> = self
            .positions
            .values()
            .try_fold(Decimal::ZERO, |sum, p| sum.checked_add(p.cost_basis));
        let left = held.and_then(|held| held.checked_add(self.account.cash));
        let right = self
            .account
            .initial_cash
            .checked_add(self.account.realized_pnl);
        left.is_some() && left == right
    }

    /// The part of a position's cost basis that selling `quantity` of it removes: proportional,
    /// rounded to money scale, and all of it when the whole position is sold (so no rounding
    /// residue is left on a closed position).
    ///
    /// # Errors
    /// [`ServiceError::InsufficientPosition`] when less than `quantity` is held.
    pub fn cost_removed(
        &self,
        symbol: &Symbol,
        quantity: Decimal,
    ) -> Result<Decimal, ServiceError> {
        let held = self.held(symbol);
        let insufficient = || ServiceError::InsufficientPosition {
            requested: quantity,
            held,
        };
        let position = self.positions.get(symbol).ok_or_else(insufficient)?;
        if quantity > position.quantity || quantity <= Decimal::ZERO {
            return Err(insufficient());
        }
        if quantity == position.quantity {
            return Ok(position.cost_basis);
        }
        // quantity < held here, so the share is below 1 and the product cannot overflow.
        position
            .cost_basis
            .checked_mul(quantity)
            .and_then(|scaled| scaled.checked_div(position.quantity))
            .map(round_money)
            .ok_or_else(insufficient)
    }

    /// The profit a trade realizes, fees included: minus the fee for a buy, proceeds minus the
    /// cost basis removed minus the fee for a sell.
    ///
    /// # Errors
    /// [`ServiceError::InsufficientPosition`] for a sell of more than is held.
    pub fn realized_by(
        &self,
        symbol: &Symbol,
        side: Side,
        quantity: Decimal,
        notional: Decimal,
        fee: Decimal,
    ) -> Result<Decimal, ServiceError> {
        match side {
            Side::Buy => Ok(-fee),
            Side::Sell => {
                let removed = self.cost_removed(symbol, quantity)?;
                Ok(notional - removed - fee)
            }
        }
    }

    /// Applies a committed trade: all of it, or (on error) nothing.
    ///
    /// A buy adds to the position's quantity and cost basis (keeping its stop-loss and
    /// take-profit) and takes `notional + fee` from cash; a sell removes the proportional cost
    /// basis, adds `notional - fee` to cash and closes the position when nothing is left.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] (`books do not balance: ...`) when the trade does not fit these
    /// books: selling more than held, a non-positive quantity, a negative fee, a recorded
    /// `realized_pnl` different from the computed one, or arithmetic overflow.
    pub fn apply(&mut self, trade: &Trade) -> Result<(), ServiceError> {
        let unbalanced = |why: &str| {
            ServiceError::Storage(format!(
                "books do not balance: trade {} ({} {} {}): {why}",
                trade.id,
                trade.side.as_str(),
                trade.quantity,
                trade.symbol
            ))
        };
        let overflow = || unbalanced("arithmetic overflow");
        if trade.quantity <= Decimal::ZERO || trade.fee < Decimal::ZERO {
            return Err(unbalanced("quantity must be positive and fee not negative"));
        }
        let realized = self
            .realized_by(
                &trade.symbol,
                trade.side,
                trade.quantity,
                trade.notional,
                trade.fee,
            )
            .map_err(|err| unbalanced(&err.to_string()))?;
        if realized != trade.realized_pnl {
            return Err(unbalanced(&format!(
                "recorded realized_pnl {} but the books give {realized}",
                trade.realized_pnl
            )));
        }

        // Compute everything first, mutate only once nothing can fail any more.
        let mut account = self.account.clone();
        let position = match trade.side {
            Side::Buy => {
                account.cash = account
                    .cash
                    .checked_sub(trade.notional)
                    .and_then(|cash| cash.checked_sub(trade.fee))
                    .ok_or_else(overflow)?;
                let mut position =
                    self.positions
                        .get(&trade.symbol)
                        .cloned()
                        .unwrap_or_else(|| Position {
                            symbol: trade.symbol.clone(),
                            quantity: Decimal::ZERO,
                            avg_entry_price: Decimal::ZERO,
                            cost_basis: Decimal::ZERO,
                            stop_loss: None,
                            take_profit: None,
                        });
                position.quantity = position
                    .quantity
                    .checked_add(trade.quantity)
                    .ok_or_else(overflow)?;
                position.cost_basis = position
                    .cost_basis
                    .checked_add(trade.notional)
                    .ok_or_else(overflow)?;
                Some(position)
            }
            Side::Sell => {
                let removed = self
                    .cost_removed(&trade.symbol, trade.quantity)
                    .map_err(|err| unbalanced(&err.to_string()))?;
                account.cash = account
                    .cash
                    .checked_add(trade.notional)
                    .and_then(|cash| cash.checked_sub(trade.fee))
                    .ok_or_else(overflow)?;
                let mut position = self
                    .positions
                    .get(&trade.symbol)
                    .cloned()
                    .ok_or_else(|| unbalanced("no position to sell"))?;
                position.quantity -= trade.quantity;
                position.cost_basis -= removed;
                (position.quantity > Decimal::ZERO).then_some(position)
            }
        };
        let position = match position {
            Some(mut position) => {
                position.avg_entry_price = position
                    .cost_basis
                    .checked_div(position.quantity)
                    .map(round_money)
                    .ok_or_else(overflow)?;
                Some(position)
            }
            None => None,
        };
        account.realized_pnl = account
            .realized_pnl
            .checked_add(realized)
            .ok_or_else(overflow)?;
        account.fees_paid = account
            .fees_paid
            .checked_add(trade.fee)
            .ok_or_else(overflow)?;
        account.trade_count = account.trade_count.checked_add(1).ok_or_else(overflow)?;

        self.account = account;
        match position {
            Some(position) => {
                self.positions.insert(trade.symbol.clone(), position);
            }
            // A closed position takes its stop-loss and take-profit with it.
            None => {
                self.positions.remove(&trade.symbol);
            }
        }
        Ok(())
    }

    /// Replaces an open position's stop-loss and take-profit with those of `updated`; quantities
    /// and cost basis stay as they are (they change only through trades).
    ///
    /// # Errors
    /// [`ServiceError::NoPosition`] when the symbol is not held.
    pub fn set_levels(&mut self, updated: &Position) -> Result<&Position, ServiceError> {
        let position = self
            .positions
            .get_mut(&updated.symbol)
            .ok_or_else(|| ServiceError::NoPosition(updated.symbol.clone()))?;
        position.stop_loss = updated.stop_loss;
        position.take_profit = updated.take_profit;
        Ok(position)
    }

    /// Compares these (stored) books with books replayed from the trade log: account figures,
    /// and each position's quantity, cost basis and average entry price. Stop-loss and
    /// take-profit levels are not derived from trades and are not compared.
    ///
    /// # Errors
    /// A description of the first difference.
    pub fn check_matches(&self, replayed: &Self) -> Result<(), String> {
        let (stored, derived) = (&self.account, &replayed.account);
        let figures = [
            ("cash", stored.cash, derived.cash),
            ("realized_pnl", stored.realized_pnl, derived.realized_pnl),
            ("fees_paid", stored.fees_paid, derived.fees_paid),
        ];
        for (name, stored, derived) in figures {
            if stored != derived {
                return Err(format!(
                    "stored {name} {stored} but the trade log gives {derived}"
                ));
            }
        }
        if stored.trade_count != derived.trade_count {
            return Err(format!(
                "stored trade_count {} but the trade log holds {}",
                stored.trade_count, derived.trade_count
            ));
        }
        for symbol in self.positions.keys().chain(replayed.positions.keys()) {
            let stored = self.positions.get(symbol);
            let derived = replayed.positions.get(symbol);
            let same = match (stored, derived) {
                (Some(a), Some(b)) => {
                    a.quantity == b.quantity
                        && a.cost_basis == b.cost_basis
                        && a.avg_entry_price == b.avg_entry_price
                }
                _ => false,
            };
            if !same {
                let show = |p: Option<&Position>| {
                    p.map_or_else(
                        || "none".to_owned(),
                        |p| format!("quantity {} cost_basis {}", p.quantity, p.cost_basis),
                    )
                };
                return Err(format!(
                    "position {symbol}: stored {} but the trade log gives {}",
                    show(stored),
                    show(derived)
                ));
            }
        }
        if !self.balances() {
            return Err("cash + cost basis differs from initial_cash + realized_pnl".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, instant, symbol};
    use cryptobot_domain::{TradeOrigin, money};

    use super::*;

    /// A trade with a fee at `fee_rate` 0.001 and the realized profit these books compute.
    fn trade(ledger: &Ledger, side: Side, price: &str, quantity: &str) -> Trade {
        let (price, quantity) = (dec(price), dec(quantity));
        let notional = money::round_money(price * quantity);
        let fee = money::round_money(notional * dec("0.001"));
        let sym = symbol("BTCUSDT");
        let realized_pnl = ledger
            .realized_by(&sym, side, quantity, notional, fee)
            .unwrap();
        Trade {
            id: ledger.account().trade_count + 1,
            symbol: sym,
            side,
            price,
            quantity,
            fee,
            notional,
            realized_pnl,
            executed_at: instant(),
            client_order_id: None,
            origin: TradeOrigin::Manual,
        }
    }

    fn apply(ledger: &mut Ledger, side: Side, price: &str, quantity: &str) -> Trade {
        let t = trade(ledger, side, price, quantity);
        ledger.apply(&t).unwrap();
        assert!(ledger.balances(), "books must balance after {t:?}");
        t
    }

    #[test]
    fn buy_moves_cash_into_cost_basis_and_charges_the_fee() {
        let mut ledger = Ledger::new(dec("10000"));
        let t = apply(&mut ledger, Side::Buy, "100", "2");
        assert_eq!(t.realized_pnl, dec("-0.2"));
        assert_eq!(ledger.cash(), dec("9799.8"));
        let p = ledger.position(&symbol("BTCUSDT")).unwrap();
        assert_eq!(
            (p.quantity, p.cost_basis, p.avg_entry_price),
            (dec("2"), dec("200"), dec("100"))
        );
        assert_eq!(ledger.account().realized_pnl, dec("-0.2"));
        assert_eq!(ledger.account().fees_paid, dec("0.2"));
        assert_eq!(ledger.account().trade_count, 1);
    }

    #[test]
    fn partial_sell_removes_proportional_cost_basis() {
        let mut ledger = Ledger::new(dec("10000"));
        apply(&mut ledger, Side::Buy, "100", "1");
        apply(&mut ledger, Side::Buy, "101", "2");
        // cost basis 100 + 202 = 302 for 3 units.
        let p = ledger.position(&symbol("BTCUSDT")).unwrap().clone();
        assert_eq!(
            (p.cost_basis, p.avg_entry_price),
            (dec("302"), dec("100.66666667"))
        );
        let sold = apply(&mut ledger, Side::Sell, "110", "1");
        // removed = round(302 * 1 / 3) = 100.66666667; fee 0.11; realized 110 - 100.66666667 - 0.11
        assert_eq!(sold.realized_pnl, dec("9.22333333"));
        let p = ledger.position(&symbol("BTCUSDT")).unwrap();
        assert_eq!(p.quantity, dec("2"));
        assert_eq!(p.cost_basis, dec("201.33333333"));
        assert_eq!(p.avg_entry_price, dec("100.66666667"));
    }

    #[test]
    fn selling_everything_removes_the_whole_cost_basis_and_the_position() {
        let mut ledger = Ledger::new(dec("1000"));
        apply(&mut ledger, Side::Buy, "3", "1");
        apply(&mut ledger, Side::Sell, "3", "0.33333333");
        apply(&mut ledger, Side::Sell, "3", "0.66666667");
        assert!(ledger.positions().is_empty());
        // No rounding residue: flat price, so only fees were lost.
        assert_eq!(ledger.cash(), dec("1000") - ledger.account().fees_paid);
        assert_eq!(ledger.account().realized_pnl, -ledger.account().fees_paid);
    }

    #[test]
    fn closed_position_loses_its_levels() {
        let mut ledger = Ledger::new(dec("1000"));
        apply(&mut ledger, Side::Buy, "10", "1");
        let mut levels = ledger.position(&symbol("BTCUSDT")).unwrap().clone();
        levels.stop_loss = Some(dec("9"));
        ledger.set_levels(&levels).unwrap();
        apply(&mut ledger, Side::Buy, "10", "1");
        assert_eq!(
            ledger.position(&symbol("BTCUSDT")).unwrap().stop_loss,
            Some(dec("9")),
            "a buy keeps the levels"
        );
        apply(&mut ledger, Side::Sell, "10", "2");
        apply(&mut ledger, Side::Buy, "10", "1");
        assert_eq!(ledger.position(&symbol("BTCUSDT")).unwrap().stop_loss, None);
    }

    #[test]
    fn invariant_holds_exactly_after_a_sequence_of_trades() {
        let mut ledger = Ledger::new(dec("10000"));
        let steps = [
            (Side::Buy, "43210.12345678", "0.01234567"),
            (Side::Buy, "43000.5", "0.00700001"),
            (Side::Sell, "44000.99", "0.00333333"),
            (Side::Buy, "42999.01", "0.1"),
            (Side::Sell, "41000.00000001", "0.05"),
            (Side::Sell, "45000", "0.06601235"),
        ];
        let mut trades = Vec::new();
        for (side, price, quantity) in steps {
            trades.push(apply(&mut ledger, side, price, quantity));
        }
        assert!(ledger.positions().is_empty());
        let a = ledger.account();
        assert_eq!(a.cash, a.initial_cash + a.realized_pnl);
        assert_eq!(Ledger::replay(dec("10000"), &trades).unwrap(), ledger);
    }

    #[test]
    fn apply_refuses_trades_that_do_not_fit_and_changes_nothing() {
        let mut ledger = Ledger::new(dec("1000"));
        apply(&mut ledger, Side::Buy, "10", "1");
        let before = ledger.clone();
        // TC0: selling more than held
        let mut oversell = trade(&ledger, Side::Sell, "10", "1");
        oversell.quantity = dec("2");
        // TC1: recorded profit differs
        let mut wrong_pnl = trade(&ledger, Side::Sell, "10", "0.5");
        wrong_pnl.realized_pnl += dec("0.00000001");
        // TC2: selling a symbol not held
        let mut other = trade(&ledger, Side::Buy, "10", "1");
        other.side = Side::Sell;
        other.symbol = symbol("ETHUSDT");
        // TC3: zero quantity
        let mut zero = trade(&ledger, Side::Buy, "10", "1");
        zero.quantity = Decimal::ZERO;
        for bad in [oversell, wrong_pnl, other, zero] {
            let err = ledger.apply(&bad).unwrap_err();
            assert!(err.to_string().contains("books do not balance"), "{err}");
            assert_eq!(ledger, before);
        }
    }

    #[test]
    fn check_matches_reports_differences_but_ignores_levels() {
        let mut ledger = Ledger::new(dec("1000"));
        apply(&mut ledger, Side::Buy, "10", "1");
        let replayed = ledger.clone();
        let mut with_levels = ledger.clone();
        let mut p = with_levels.position(&symbol("BTCUSDT")).unwrap().clone();
        p.take_profit = Some(dec("20"));
        with_levels.set_levels(&p).unwrap();
        assert_eq!(with_levels.check_matches(&replayed), Ok(()));

        // TC0: cash differs
        let mut account = ledger.account().clone();
        account.cash += Decimal::ONE;
        let stored = Ledger::from_parts(account, ledger.positions().values().cloned());
        assert!(
            stored
                .check_matches(&replayed)
                .unwrap_err()
                .contains("cash")
        );
        // TC1: a position missing
        let stored = Ledger::from_parts(ledger.account().clone(), []);
        assert!(
            stored
                .check_matches(&replayed)
                .unwrap_err()
                .contains("BTCUSDT")
        );
        // TC2: quantity differs
        let mut p = ledger.position(&symbol("BTCUSDT")).unwrap().clone();
        p.quantity = dec("2");
        let stored = Ledger::from_parts(ledger.account().clone(), [p]);
        assert!(
            stored
                .check_matches(&replayed)
                .unwrap_err()
                .contains("quantity")
        );
        // TC3: trade count differs
        let mut account = ledger.account().clone();
        account.trade_count = 5;
        let stored = Ledger::from_parts(account, ledger.positions().values().cloned());
        assert!(
            stored
                .check_matches(&replayed)
                .unwrap_err()
                .contains("trade_count")
        );
    }

    #[test]
    fn set_levels_needs_a_position() {
        let mut ledger = Ledger::new(dec("1000"));
        let p = Position {
            symbol: symbol("BTCUSDT"),
            quantity: dec("1"),
            avg_entry_price: dec("1"),
            cost_basis: dec("1"),
            stop_loss: None,
            take_profit: None,
        };
        assert_eq!(
            ledger.set_levels(&p).unwrap_err(),
            ServiceError::NoPosition(symbol("BTCUSDT"))
        );
    }
}
