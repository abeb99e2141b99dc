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

/// Most fraction digits, and most significant digits, of a client-written decimal.
pub const MAX_DIGITS: usize = 28;

/// Parses a client-written decimal (a size, a price level, a configuration value) with the one
/// grammar every input path uses: `digits [ "." digits ]`, where the integer part is `0` or starts
/// with a non-zero digit, e.g. `"0.001"`, `"100"`, `"42000.50"`.
///
/// Refused: a sign (`+1`, `-1`), an exponent (`1e-3`), a missing integer or fraction part (`.5`,
/// `1.`), leading zeros (`00.1`, `007`), separators (`1_000`, `1,000`), spaces anywhere, and more
/// than 28 significant digits or fraction digits (what [`Decimal`] holds exactly). `rust_decimal`'s
/// own parser is more lenient on several of these (it drops `_`), which is how `"1_000"` once read
/// as 1000 BTC.
///
/// # Errors
/// [`DomainError::InvalidDecimal`] naming `field` and what is wrong.
pub fn parse_decimal(field: &'static str, text: &str) -> Result<Decimal, DomainError> {
    let refuse = |reason: &'static str| DomainError::InvalidDecimal { field, reason };
    if text.is_empty() {
        return Err(refuse("empty"));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(refuse(match text.as_bytes()[0] {
            b'+' | b'-' => "no sign allowed",
            b' ' | b'\t' => "no spaces allowed",
            _ if text.contains(['e', 'E']) => "no exponent allowed",
            _ if text.contains(['_', ',', ' ']) => "no separators or spaces allowed",
            _ if text.starts_with('.') || text.ends_with('.') => {
                "digits needed on both sides of the point"
            }
            _ => "not a decimal",
        }));
    }
    if whole.len() > 1 && whole.starts_with('0') {
        return Err(refuse("no leading zeros allowed"));
    }
    // The documented bound, exactly: 28 fraction digits and 28 significant digits (leading zeros
    // do not count). `Decimal` would hold some 29-digit values too, but a bound a client (and a
    // schema, docs/openapi.json) can check by counting is worth more than one more digit.
    let fraction = fraction.unwrap_or_default();
    let significant = whole.len() + fraction.len()
        - whole
            .bytes()
            .chain(fraction.bytes())
            .take_while(|b| *b == b'0')
            .count();
    if fraction.len() > MAX_DIGITS || significant > MAX_DIGITS {
        return Err(refuse("too many digits"));
    }
    Decimal::from_str_exact(text).map_err(|_| refuse("too many digits"))
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
    fn decimal_grammar_accepts_plain_decimals_only() {
        // TC0: accepted, exactly as written (scale kept)
        for (text, value) in [
            ("0", "0"),
            ("0.001", "0.001"),
            ("100", "100"),
            ("42000.50", "42000.50"),
            (
                "0.0000000000000000000000000001",
                "0.0000000000000000000000000001",
            ),
            // 28 significant digits, the most
            (
                "1234567890123456789012345678",
                "1234567890123456789012345678",
            ),
            (
                "0.1234567890123456789012345678",
                "0.1234567890123456789012345678",
            ),
        ] {
            let parsed = parse_decimal("amount", text).unwrap();
            assert_eq!(parsed.to_string(), value, "{text}");
        }
        // TC1: refused, with the reason
        let cases = [
            ("", "empty"),
            ("1e-3", "no exponent allowed"),
            ("1E3", "no exponent allowed"),
            ("+0.001", "no sign allowed"),
            ("-1", "no sign allowed"),
            (".001", "digits needed on both sides of the point"),
            ("1.", "digits needed on both sides of the point"),
            ("00.001", "no leading zeros allowed"),
            ("007", "no leading zeros allowed"),
            ("2_0", "no separators or spaces allowed"),
            ("1_0.5_0", "no separators or spaces allowed"),
            ("1_000", "no separators or spaces allowed"),
            ("1,000", "no separators or spaces allowed"),
            (" 0.001", "no spaces allowed"),
            ("0.001 ", "no separators or spaces allowed"),
            ("1 000", "no separators or spaces allowed"),
            ("1.2.3", "not a decimal"),
            ("abc", "not a decimal"),
            ("0x10", "not a decimal"),
            ("NaN", "not a decimal"),
            ("１", "not a decimal"),
            ("99999999999999999999999999999999", "too many digits"),
            ("0.00000000000000000000000000001", "too many digits"),
            // 29 significant digits that a Decimal would still hold: over the documented bound
            ("79228162514264337593543950335", "too many digits"),
            ("1.2345678901234567890123456789", "too many digits"),
        ];
        for (text, reason) in cases {
            assert_eq!(
                parse_decimal("amount", text),
                Err(DomainError::InvalidDecimal {
                    field: "amount",
                    reason
                }),
                "{text:?}"
            );
        }
        let err = parse_decimal("quantity", "1e-3").unwrap_err();
        assert_eq!(err.code(), "invalid_decimal");
        assert_eq!(
            err.to_string(),
            "invalid decimal for quantity: no exponent allowed; expected digits with an optional fraction, e.g. \"0.01\""
        );
    }

    #[test]
    fn positivity_check_names_the_field() {
        assert!(ensure_positive("quantity", d("0.1")).is_ok());
        let err = ensure_positive("amount", Decimal::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "amount must be greater than zero, got 0");
    }
}

/// Serde for `Option<Decimal>` as a JSON string or `null` (rust_decimal's `str_option` refuses
/// `null` when reading, so an absent price would not survive a round trip).
pub mod opt_str {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as its decimal string, `None` as `null`.
    ///
    /// # Errors
    /// Those of the serializer.
    #[allow(clippy::ref_option, reason = "the signature serde's `with` requires")]
    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    /// Reads a decimal string or `null`.
    ///
    /// # Errors
    /// A value that is neither, or a string that is no decimal.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| Decimal::from_str(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}
