//! Resting orders of the paper account: when a ticker fills or triggers them and what they hold
//! back. Pure and synchronous; the engine commits what these functions decide.

use cryptobot_domain::money::round_money;
use cryptobot_domain::{Order, OrderStatus, OrderType, Side, Ticker};
use rust_decimal::Decimal;

/// What a ticker does to an open order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it keeps resting.
    Wait,
    /// A stop order's stop price was reached: it now acts as a market or limit order.
    Trigger,
    /// It fills now, at this price.
    Fill(Decimal),
}

/// The price a limit order fills at against `ticker`, if it crosses: a buy when the ask is at or
/// below its limit (at the ask: the limit or better, so a price that gapped through fills at the
/// better price), a sell when the bid is at or above its limit (at the bid). A side without a
/// positive quote never crosses.
#[must_use]
pub fn crossing_price(side: Side, limit: Decimal, ticker: &Ticker) -> Option<Decimal> {
    match side {
        Side::Buy => (ticker.ask > Decimal::ZERO && ticker.ask <= limit).then_some(ticker.ask),
        Side::Sell => (ticker.bid > Decimal::ZERO && ticker.bid >= limit).then_some(ticker.bid),
    }
}

/// True when the last price reached a stop: at or above it for a buy stop, at or below it for a
/// sell stop.
#[must_use]
pub fn stop_reached(side: Side, stop: Decimal, ticker: &Ticker) -> bool {
    ticker.price > Decimal::ZERO
        && match side {
            Side::Buy => ticker.price >= stop,
            Side::Sell => ticker.price <= stop,
        }
}

/// What `ticker` does to `order` (which must be open and of its symbol).
///
/// A limit order (or a triggered stop-limit) fills when it crosses; a stop order that is still
/// `new` triggers when its stop price is reached; a triggered stop-market fills at the last
/// price, as a market order does.
#[must_use]
pub fn evaluate(order: &Order, ticker: &Ticker) -> Step {
    if !order.status.is_open() || ticker.symbol != order.symbol {
        return Step::Wait;
    }
    let stop_pending = order.status == OrderStatus::New
        && matches!(
            order.order_type,
            OrderType::StopMarket | OrderType::StopLimit
        );
    if stop_pending {
        return match order.stop_price {
            Some(stop) if stop_reached(order.side, stop, ticker) => Step::Trigger,
            _ => Step::Wait,
        };
    }
    match order.order_type {
        OrderType::Limit | OrderType::StopLimit => order
            .price
            .and_then(|limit| crossing_price(order.side, limit, ticker))
            .map_or(Step::Wait, Step::Fill),
        OrderType::StopMarket | OrderType::Market if ticker.price > Decimal::ZERO => {
            Step::Fill(ticker.price)
        }
        OrderType::StopMarket | OrderType::Market => Step::Wait,
    }
}

/// The price an open order's buy reservation is computed at: its limit price, or (stop-market)
/// its stop price.
#[must_use]
pub fn reference_price(
    order_type: OrderType,
    price: Option<Decimal>,
    stop: Option<Decimal>,
) -> Option<Decimal> {
    match order_type {
        OrderType::Limit | OrderType::StopLimit => price,
        OrderType::StopMarket => stop,
        OrderType::Market => None,
    }
}

/// What an open order of `quantity` at `price` holds back: `(cash, quantity)`. A buy holds its
/// notional plus the fee on it (`round_money(price * quantity)` plus
/// `round_money(notional * fee_rate)`, exactly what a fill at that price costs); a sell holds
/// its quantity. `None` when the arithmetic overflows (such an order can never be afforded).
#[must_use]
pub fn reservation(
    side: Side,
    price: Decimal,
    quantity: Decimal,
    fee_rate: Decimal,
) -> Option<(Decimal, Decimal)> {
    match side {
        Side::Buy => {
            let notional = price.checked_mul(quantity).map(round_money)?;
            let fee = notional.checked_mul(fee_rate).map(round_money)?;
            Some((notional.checked_add(fee)?, Decimal::ZERO))
        }
        Side::Sell => Some((Decimal::ZERO, quantity)),
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::TimeInForce;
    use cryptobot_domain::fixtures::{dec, instant, symbol};

    use super::*;

    /// A ticker with last price, bid and ask as given.
    fn quote(last: &str, bid: &str, ask: &str) -> Ticker {
        Ticker {
            symbol: symbol("BTCUSDT"),
            price: dec(last),
            bid: dec(bid),
            ask: dec(ask),
            volume_24h: Decimal::ZERO,
            change_24h_pct: Decimal::ZERO,
            updated_at: instant(),
        }
    }

    fn order(
        side: Side,
        order_type: OrderType,
        price: Option<&str>,
        stop: Option<&str>,
        status: OrderStatus,
    ) -> Order {
        Order {
            id: 1,
            client_order_id: None,
            symbol: symbol("BTCUSDT"),
            side,
            order_type,
            quantity: Some(dec("1")),
            amount: None,
            price: price.map(dec),
            stop_price: stop.map(dec),
            time_in_force: TimeInForce::Gtc,
            post_only: false,
            status,
            reserved_cash: Decimal::ZERO,
            reserved_quantity: Decimal::ZERO,
            trade_id: None,
            reason: None,
            created_at: instant(),
            updated_at: instant(),
        }
    }

    #[test]
    fn limit_orders_fill_on_crossing_touching_and_gapping_through() {
        use OrderStatus::New;
        use OrderType::Limit;
        use Side::{Buy, Sell};
        let cases = [
            // TC0: buy limit 100, ask above: rests
            (Buy, "100", ("101", "100.5", "100.01"), Step::Wait),
            // TC1: buy limit 100, ask touches: fills at the limit
            (
                Buy,
                "100",
                ("100.5", "99.99", "100"),
                Step::Fill(dec("100")),
            ),
            // TC2: buy limit 100, ask gapped down to 95: fills at 95, the better price
            (Buy, "100", ("95", "94.9", "95"), Step::Fill(dec("95"))),
            // TC3: buy limit 100, last below but ask above: the ask decides, rests
            (Buy, "100", ("99", "99", "100.01"), Step::Wait),
            // TC4: sell limit 100, bid below: rests
            (Sell, "100", ("100", "99.99", "100.01"), Step::Wait),
            // TC5: sell limit 100, bid touches
            (
                Sell,
                "100",
                ("100", "100", "100.02"),
                Step::Fill(dec("100")),
            ),
            // TC6: sell limit 100, bid gapped up to 104: fills at 104
            (
                Sell,
                "100",
                ("104", "104", "104.01"),
                Step::Fill(dec("104")),
            ),
            // TC7: no quote on the side: never crosses
            (Sell, "100", ("104", "0", "0"), Step::Wait),
        ];
        for (side, limit, (last, bid, ask), expected) in cases {
            let o = order(side, Limit, Some(limit), None, New);
            assert_eq!(
                evaluate(&o, &quote(last, bid, ask)),
                expected,
                "{side:?} {limit} @ {last}/{bid}/{ask}"
            );
        }
    }

    #[test]
    fn stops_trigger_on_the_last_price_then_act_as_market_or_limit() {
        use OrderStatus::{New, Triggered};
        use OrderType::{StopLimit, StopMarket};
        use Side::{Buy, Sell};
        let cases = [
            // TC0: buy stop 110: last 109.99 waits (even with the ask above the stop)
            (
                Buy,
                StopMarket,
                None,
                "110",
                New,
                ("109.99", "109.98", "110.5"),
                Step::Wait,
            ),
            // TC1: buy stop 110: last touches: triggers
            (
                Buy,
                StopMarket,
                None,
                "110",
                New,
                ("110", "109.99", "110.01"),
                Step::Trigger,
            ),
            // TC2: sell stop 90: last gaps to 85: triggers
            (
                Sell,
                StopMarket,
                None,
                "90",
                New,
                ("85", "84.99", "85.01"),
                Step::Trigger,
            ),
            // TC3: sell stop 90 above the last's path: waits
            (
                Sell,
                StopMarket,
                None,
                "90",
                New,
                ("90.01", "90", "90.02"),
                Step::Wait,
            ),
            // TC4: triggered stop-market fills at the last price, as a market order
            (
                Sell,
                StopMarket,
                None,
                "90",
                Triggered,
                ("85", "84.99", "85.01"),
                Step::Fill(dec("85")),
            ),
            // TC5: stop-limit triggered, limit 89, bid 84.99: a sell limit at 89 fills at the bid
            (
                Sell,
                StopLimit,
                Some("89"),
                "90",
                Triggered,
                ("85", "84.99", "85.01"),
                Step::Wait,
            ),
            (
                Sell,
                StopLimit,
                Some("80"),
                "90",
                Triggered,
                ("85", "84.99", "85.01"),
                Step::Fill(dec("84.99")),
            ),
            // TC6: a new stop-limit triggers first, whatever its limit
            (
                Buy,
                StopLimit,
                Some("111"),
                "110",
                New,
                ("110", "109.99", "110.01"),
                Step::Trigger,
            ),
            // TC7: triggered buy stop-limit at 111 fills at the ask
            (
                Buy,
                StopLimit,
                Some("111"),
                "110",
                Triggered,
                ("110", "109.99", "110.01"),
                Step::Fill(dec("110.01")),
            ),
        ];
        for (side, kind, limit, stop, status, (last, bid, ask), expected) in cases {
            let o = order(side, kind, limit, Some(stop), status);
            assert_eq!(
                evaluate(&o, &quote(last, bid, ask)),
                expected,
                "{side:?} {kind:?} {limit:?} stop {stop} {status:?} @ {last}"
            );
        }
    }

    #[test]
    fn closed_orders_and_other_symbols_never_move() {
        for status in [
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Expired,
        ] {
            let o = order(Side::Buy, OrderType::Limit, Some("100"), None, status);
            assert_eq!(evaluate(&o, &quote("1", "1", "1")), Step::Wait);
        }
        let mut o = order(
            Side::Buy,
            OrderType::Limit,
            Some("100"),
            None,
            OrderStatus::New,
        );
        o.symbol = symbol("ETHUSDT");
        assert_eq!(evaluate(&o, &quote("1", "1", "1")), Step::Wait);
    }

    #[test]
    fn reservations_hold_what_a_fill_at_the_price_costs() {
        // TC0: buy 0.5 at 100.123456789 with 0.1 % fee: notional rounded to 8 places, fee too
        assert_eq!(
            reservation(Side::Buy, dec("100.123456789"), dec("0.5"), dec("0.001")),
            Some((dec("50.06172839") + dec("0.05006173"), Decimal::ZERO))
        );
        // TC1: a sell holds its quantity
        assert_eq!(
            reservation(Side::Sell, dec("100"), dec("2"), dec("0.001")),
            Some((Decimal::ZERO, dec("2")))
        );
        // TC2: overflow is none
        assert_eq!(
            reservation(Side::Buy, Decimal::MAX, dec("2"), dec("0.001")),
            None
        );
        assert_eq!(
            reference_price(OrderType::StopMarket, None, Some(dec("5"))),
            Some(dec("5"))
        );
        assert_eq!(
            reference_price(OrderType::StopLimit, Some(dec("6")), Some(dec("5"))),
            Some(dec("6"))
        );
    }
}
