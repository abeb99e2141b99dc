use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::DomainError;

/// A trading pair such as `BTCUSDT`: 2 to 20 upper-case ASCII letters or digits.
///
/// Parsing never changes case: `btcusdt` is rejected rather than silently accepted, so a client
/// learns the canonical spelling once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Symbol(String);

impl Symbol {
    /// Longest accepted symbol, in characters.
    pub const MAX_LEN: usize = 20;

    /// Validates and wraps a symbol.
    ///
    /// # Errors
    /// [`DomainError::InvalidSymbol`] when the text is not 2-20 upper-case letters or digits.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let valid = (2..=Self::MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(DomainError::InvalidSymbol(truncate_for_message(text)))
        }
    }

    /// Returns the symbol as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits the symbol into base and quote asset, trying the given quote assets in order
    /// (`BTCUSDT` with `["USDT"]` gives `("BTC", "USDT")`). Returns `None` when no quote matches or
    /// the base would be empty.
    #[must_use]
    pub fn split<'a>(&'a self, quote_assets: &[&str]) -> Option<(&'a str, &'a str)> {
        quote_assets.iter().find_map(|quote| {
            let base = self.0.strip_suffix(quote)?;
            (!base.is_empty()).then(|| (base, &self.0[base.len()..]))
        })
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A client-chosen idempotency key for a trade command: 1 to 64 characters from `[A-Za-z0-9_.:-]`
/// (the same alphabet as exchange client order ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientOrderId(String);

impl ClientOrderId {
    /// Longest accepted id, in characters.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps a client order id.
    ///
    /// # Errors
    /// [`DomainError::InvalidClientOrderId`] for an empty, too long or oddly spelled id.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let valid = (1..=Self::MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(DomainError::InvalidClientOrderId)
        }
    }

    /// [`ClientOrderId::parse`] for an optional field: `None` stays `None`.
    ///
    /// # Errors
    /// As [`ClientOrderId::parse`].
    pub fn parse_optional(text: Option<&str>) -> Result<Option<Self>, DomainError> {
        text.map(Self::parse).transpose()
    }

    /// Returns the id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientOrderId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Keeps hostile input out of error messages and logs beyond a short prefix.
fn truncate_for_message(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_symbols_and_rejects_the_rest() {
        // TC0: canonical pairs
        assert!(Symbol::parse("BTCUSDT").is_ok());
        assert!(Symbol::parse("1INCHUSDT").is_ok());
        // TC1: lower case, punctuation, empty, too short, too long
        for bad in [
            "btcusdt",
            "BTC-USDT",
            "",
            "B",
            "ABCDEFGHIJKLMNOPQRSTU",
            "BTC USDT",
            "ÄBC",
        ] {
            assert_eq!(
                Symbol::parse(bad).unwrap_err().code(),
                "invalid_symbol",
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn splits_base_and_quote_with_configured_quote_assets() {
        let symbol = Symbol::parse("ETHBTC").unwrap();
        assert_eq!(symbol.split(&["USDT", "BTC"]), Some(("ETH", "BTC")));
        assert_eq!(symbol.split(&["USDT"]), None);
        // TC1: the quote alone is not a pair
        assert_eq!(Symbol::parse("USDT").unwrap().split(&["USDT"]), None);
    }

    #[test]
    fn deserializing_validates() {
        let ok: Symbol = serde_json::from_str("\"SOLUSDT\"").unwrap();
        assert_eq!(ok.as_str(), "SOLUSDT");
        assert!(serde_json::from_str::<Symbol>("\"sol\"").is_err());
        assert!(serde_json::from_str::<Symbol>("42").is_err());
    }

    #[test]
    fn client_order_ids_are_bounded_and_restricted() {
        assert!(ClientOrderId::parse("bot-1:order_2.a").is_ok());
        assert!(ClientOrderId::parse("").is_err());
        assert!(ClientOrderId::parse(&"x".repeat(65)).is_err());
        assert!(ClientOrderId::parse("has space").is_err());
    }

    #[test]
    fn error_message_truncates_hostile_input() {
        let long = "a".repeat(10_000);
        let message = Symbol::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "message was {} bytes", message.len());
    }
}
