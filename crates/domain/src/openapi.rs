//! OpenAPI schemas of the wire forms serde gives the domain's values: symbols and keys as
//! patterned strings, decimals as strings of the grammar (docs/protocol.md). The types derive
//! `utoipa::ToSchema` with these as their fields' `value_type`s.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OneOfBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::money::MAX_DIGITS;

fn text(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// Declares a named string schema `$name` for the marker `$marker`.
macro_rules! string_schema {
    ($(#[$doc:meta])* $marker:ident, $name:literal, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $marker;

        impl PartialSchema for $marker {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $marker {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

string_schema!(
    /// `Symbol`: what [`crate::Symbol::parse`] accepts.
    SymbolText,
    "Symbol",
    text("^[A-Z0-9]{2,20}$").examples(["BTCUSDT"]).build()
);

string_schema!(
    /// `ClientOrderId`: what [`crate::ClientOrderId::parse`] accepts.
    ClientOrderIdText,
    "ClientOrderId",
    text("^[A-Za-z0-9_.:-]{1,64}$").build()
);

string_schema!(
    /// `Decimal`: a decimal as the server writes it.
    DecimalText,
    "Decimal",
    text(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$").build()
);

string_schema!(
    /// `PositiveDecimal`: what [`crate::money::parse_decimal`] accepts above zero.
    PositiveDecimalText,
    "PositiveDecimal",
    text(&positive_decimal_pattern())
        .description(Some(
            "a decimal of the grammar (docs/protocol.md) above zero: digits [. digits], no \
             leading zeros, at most 28 fraction and 28 significant digits (zero is invalid_size, \
             anything else invalid_decimal)",
        ))
        .build()
);

/// The grammar of [`crate::money::parse_decimal`] above zero as one regular expression: digits
/// with an optional fraction, no leading zeros, at most [`MAX_DIGITS`] fraction digits and
/// [`MAX_DIGITS`] significant ones.
#[must_use]
pub fn positive_decimal_pattern() -> String {
    let max = MAX_DIGITS;
    let mut branches = Vec::new();
    // A whole part of `1 + extra` digits leaves `max - 1 - extra` digits to the fraction.
    for extra in 0..max {
        let whole = match extra {
            0 => "[1-9]".to_owned(),
            _ => format!("[1-9][0-9]{{{extra}}}"),
        };
        let room = max - 1 - extra;
        branches.push(if room == 0 {
            whole
        } else {
            format!(r"{whole}(\.[0-9]{{1,{room}}})?")
        });
    }
    // Below one: `zeros` zeros after the point, then a non-zero digit and what fits.
    for zeros in 0..max {
        let lead = match zeros {
            0 => r"0\.".to_owned(),
            _ => format!(r"0\.0{{{zeros}}}"),
        };
        let room = max - 1 - zeros;
        branches.push(if room == 0 {
            format!("{lead}[1-9]")
        } else {
            format!("{lead}[1-9][0-9]{{0,{room}}}")
        });
    }
    format!("^({})$", branches.join("|"))
}

/// `T` or `null`, in the order the document has always listed them.
#[must_use]
pub fn nullable<T: ToSchema>() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(RefOr::Ref(
            utoipa::openapi::Ref::from_schema_name(T::name()),
        ))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// The `status` filter of an order listing: `open` or one status, for `schema_with`.
#[must_use]
pub fn status_filter() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([
            "open",
            "new",
            "triggered",
            "filled",
            "canceled",
            "rejected",
            "expired",
        ]))
        .into()
}

/// `nullable::<DecimalText>()`, for `schema_with`.
#[must_use]
pub fn nullable_decimal() -> RefOr<Schema> {
    nullable::<DecimalText>()
}

/// `nullable::<ClientOrderIdText>()`, for `schema_with`.
#[must_use]
pub fn nullable_client_order_id() -> RefOr<Schema> {
    nullable::<ClientOrderIdText>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_positive_decimal_pattern_spells_the_grammar() {
        let pattern = positive_decimal_pattern();
        // TC0: the bounds at both ends
        assert!(pattern.starts_with(r"^([1-9](\.[0-9]{1,27})?|[1-9][0-9]{1}(\.[0-9]{1,26})?|"));
        assert!(pattern.contains(r"|[1-9][0-9]{27}|0\.[1-9][0-9]{0,27}|"));
        assert!(pattern.ends_with(r"|0\.0{26}[1-9][0-9]{0,1}|0\.0{27}[1-9])$"));
        // TC1: one branch per whole-part length and per count of leading fraction zeros
        assert_eq!(pattern.matches('|').count(), 2 * MAX_DIGITS - 1);
    }
}
