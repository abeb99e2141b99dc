use rust_decimal::{Decimal, RoundingStrategy};

use crate::DomainError;

/// Decimal places kept for base-asset quantities (exchanges use at most 8).
pub const QUANTITY_SCALE: u32 = 8;
/// Decimal places kept for quote-asset money: cash, fees, values.
pub const MONEY_SCALE: u32 = 8;

/// Rounds a quantity down to [`QUANTITY_SCALE`] places, so a buy never spends more than allowed.
#[must_use]
pub fn floor_quantity(quantity: Decimal) -> Decimal {
    quantity
        .round_dp_with_strategy(QUANTITY_SCALE, RoundingStrategy::ToZero)
        .normalize()
}

/// Rounds money to [`MONEY_SCALE`] places (banker's rounding would bias fees; round half up).
#[must_use]
pub fn round_money(value: Decimal) -> Decimal {
    value
        .round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// Checks that a value is strictly positive.
///
/// # Errors
/// [`DomainError::NotPositive`] naming `field` when `value <= 0`.
pub fn ensure_positive(field: &'static str, value: Decimal) -> Result<Decimal, DomainError> {
    if value > Decimal::ZERO {
        Ok(value)
    } else {
        Err(DomainError::NotPositive { field, value })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn quantities_round_toward_zero() {
        assert_eq!(floor_quantity(d("0.123456789")), d("0.12345678"));
        assert_eq!(floor_quantity(d("1.000000009")), d("1"));
    }

    #[test]
    fn money_rounds_half_away_from_zero() {
        assert_eq!(round_money(d("0.000000005")), d("0.00000001"));
        assert_eq!(round_money(d("-0.000000005")), d("-0.00000001"));
    }

    #[test]
    fn positivity_check_names_the_field() {
        assert!(ensure_positive("quantity", d("0.1")).is_ok());
        let err = ensure_positive("amount", Decimal::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "amount must be greater than zero, got 0");
    }
}
