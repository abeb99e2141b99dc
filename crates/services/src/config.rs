//! How configuration values are read, for every layer's `Deserialize` configuration: money as
//! decimal strings, and lists that can also come from one environment variable.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// A setting that is not acceptable, for configurations whose checks name the key within their
/// section (the caller adds the section).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    /// The key within its section, e.g. `lease_ttl_ms`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidSetting {
    /// The problem `message` with the key `key`.
    #[must_use]
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// A non-negative decimal in the API's grammar ([`cryptobot_domain::money::parse_decimal`]),
/// written as a string (`"0.001"`) or a whole number: money never passes through a float, and
/// `"1_000"`, `"1e-3"`, `"+10"` or `".5"` are refused rather than guessed at.
///
/// # Errors
/// A float, a negative number, or text outside the grammar.
pub fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    deserializer.deserialize_any(DecimalVisitor)
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal written as a string, e.g. \"0.001\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Decimal, E> {
        cryptobot_domain::money::parse_decimal("value", text).map_err(|err| {
            let clipped: String = text.chars().take(32).collect();
            E::custom(format!("{clipped:?}: {err}"))
        })
    }

    fn visit_u64<E: de::Error>(self, whole: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(whole))
    }

    fn visit_i64<E: de::Error>(self, whole: i64) -> Result<Decimal, E> {
        if whole < 0 {
            return Err(E::custom(format!(
                "{whole}: no sign allowed; expected a non-negative decimal"
            )));
        }
        Ok(Decimal::from(whole))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Decimal, E> {
        Err(E::custom(
            "expected a decimal written as a string, e.g. \"0.001\", not a float",
        ))
    }
}

/// A table of [`decimal`]s, e.g. `initial_prices = { BTCUSDT = "65000" }`, or (from an
/// environment variable) the same as a JSON object, `{"BTCUSDT": "65000"}`; an empty string is an
/// empty table.
///
/// # Errors
/// A key that is not a valid `K`, or a value that is not a [`decimal`].
pub fn decimal_map<'de, D, K>(deserializer: D) -> Result<BTreeMap<K, Decimal>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
{
    /// One value of the table, read by [`decimal`].
    struct Value(Decimal);

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            decimal(deserializer).map(Self)
        }
    }

    struct TableVisitor<K>(PhantomData<K>);

    impl<'de, K: Deserialize<'de> + Ord> Visitor<'de> for TableVisitor<K> {
        type Value = BTreeMap<K, Decimal>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of decimals written as strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut table = BTreeMap::new();
            while let Some((key, Value(value))) = map.next_entry::<K, Value>()? {
                table.insert(key, value);
            }
            Ok(table)
        }

        /// A JSON object in a string, as from an environment variable.
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            if text.trim().is_empty() {
                return Ok(BTreeMap::new());
            }
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|err| E::custom(format!("not a JSON object: {err}")))?;
            object
                .into_iter()
                .map(|(key, value)| {
                    let parsed = K::deserialize(key.as_str().into_deserializer())?;
                    let value = decimal(value).map_err(|err| E::custom(format!("{key}: {err}")))?;
                    Ok((parsed, value))
                })
                .collect()
        }
    }

    deserializer.deserialize_any(TableVisitor(PhantomData))
}

/// A list: a sequence (TOML, JSON), or, as it arrives from an environment variable, a string
/// holding a JSON array (`["https://a","https://b"]`) or comma-separated items
/// (`BTCUSDT,ETHUSDT`, items trimmed, empty ones dropped). An empty string is an empty list.
///
/// # Errors
/// Malformed JSON, or an item that is not a valid `T`.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    read_list(deserializer, true)
}

/// Like [`list`], for items that are tables: a string must hold a JSON array.
///
/// # Errors
/// A string that is not a JSON array of valid items.
pub fn json_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    read_list(deserializer, false)
}

fn read_list<'de, D, T>(deserializer: D, comma_separated: bool) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    deserializer.deserialize_any(ListVisitor {
        comma_separated,
        item: PhantomData,
    })
}

struct ListVisitor<T> {
    /// Whether a string that is not JSON is split at commas.
    comma_separated: bool,
    item: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list, or a string with a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // The hint comes from the input: trust it only for a modest allocation.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1_024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<T>, E> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if text.starts_with('[') || !self.comma_separated {
            return serde_json::from_str(text).map_err(|err| match err.classify() {
                // Well-formed JSON with a bad item: the item's own reason says it.
                serde_json::error::Category::Data => E::custom(err),
                _ => E::custom(format!("not a JSON list: {err}")),
            });
        }
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| T::deserialize(item.into_deserializer()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "list")]
        addresses: Vec<IpAddr>,
        #[serde(default, deserialize_with = "json_list")]
        tables: Vec<Table>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Table {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    struct Money {
        #[serde(deserialize_with = "decimal")]
        amount: Decimal,
    }

    fn addresses(json: &str) -> Result<Vec<String>, String> {
        serde_json::from_str::<Lists>(json)
            .map(|lists| lists.addresses.iter().map(ToString::to_string).collect())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn lists_come_as_sequences_json_strings_or_comma_separated_strings() {
        let both = Ok(vec!["10.0.0.1".to_owned(), "::1".to_owned()]);
        // TC0: a sequence (TOML, JSON)
        assert_eq!(addresses(r#"{"addresses": ["10.0.0.1", "::1"]}"#), both);
        // TC1: a JSON array in a string (an environment variable)
        assert_eq!(
            addresses(r#"{"addresses": "[\"10.0.0.1\", \"::1\"]"}"#),
            both
        );
        // TC2: comma-separated, trimmed, empty items dropped
        assert_eq!(addresses(r#"{"addresses": " 10.0.0.1, ::1 ,"}"#), both);
        // TC3: an empty string is an empty list
        assert_eq!(addresses(r#"{"addresses": " "}"#), Ok(vec![]));
        // TC4: a bad item or bad JSON is refused with the reason
        let err = addresses(r#"{"addresses": "10.0.0.1,proxy"}"#).unwrap_err();
        assert!(err.contains("invalid IP address"), "{err}");
        let err = addresses(r#"{"addresses": "[\"10.0.0.1\""}"#).unwrap_err();
        assert!(err.starts_with("not a JSON list"), "{err}");
        let err = addresses(r#"{"addresses": "[\"proxy\"]"}"#).unwrap_err();
        assert!(err.starts_with("invalid IP address syntax"), "{err}");
    }

    #[test]
    fn lists_of_tables_from_a_string_must_be_json() {
        let lists: Lists =
            serde_json::from_str(r#"{"addresses": [], "tables": "[{\"name\": \"a\"}]"}"#).unwrap();
        assert_eq!(lists.tables, [Table { name: "a".into() }]);
        let err = serde_json::from_str::<Lists>(r#"{"addresses": [], "tables": "a,b"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("not a JSON list"), "{err}");
    }

    /// `{}` gives the defaults, `overrides` changes one key, an unknown key is refused naming it.
    fn reads_itself<T>(overrides: &str, changed: fn(&T) -> bool)
    where
        T: DeserializeOwned + Default + PartialEq + fmt::Debug,
    {
        let name = std::any::type_name::<T>();
        assert_eq!(
            serde_json::from_str::<T>("{}").unwrap(),
            T::default(),
            "{name}"
        );
        let config: T = serde_json::from_str(overrides).unwrap();
        assert!(changed(&config), "{name}: {overrides}");
        let err = serde_json::from_str::<T>(r#"{"typo": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `typo`"), "{name}: {err}");
    }

    #[test]
    fn every_service_configuration_reads_itself_with_defaults_and_no_unknown_keys() {
        use crate::alerts::AlertConfig;
        use crate::market::{BinanceConfig, BinanceStream, MarketConfig};
        use crate::signals::SignalConfig;
        use crate::trading::TradingConfig;
        use crate::{BusBackend, BusConfig};

        reads_itself::<MarketConfig>(
            r#"{"symbols": "BTCUSDT,ETHUSDT", "initial_prices": {"BTCUSDT": "65000"}}"#,
            |c| c.symbols.len() == 2 && c.initial_prices.len() == 1,
        );
        reads_itself::<BinanceConfig>(r#"{"stream": "bookTicker"}"#, |c| {
            c.stream == BinanceStream::BookTicker
        });
        reads_itself::<TradingConfig>(r#"{"fee_rate": "0.002", "auto_trade": false}"#, |c| {
            c.fee_rate == Decimal::new(2, 3) && !c.auto_trade
        });
        reads_itself::<BusConfig>(r#"{"backend": "redis", "lease_ttl_ms": 2000}"#, |c| {
            c.backend == BusBackend::Redis && c.lease_ttl_ms == 2000
        });
        reads_itself::<SignalConfig>(r#"{"short_window": 3}"#, |c| c.short_window == 3);
        reads_itself::<AlertConfig>(r#"{"price_move_pct": "2.5"}"#, |c| {
            c.price_move_pct == Decimal::new(25, 1)
        });
    }

    #[test]
    fn decimals_are_strings_or_whole_numbers_never_floats() {
        let amount = |json: &str| {
            serde_json::from_str::<Money>(&format!(r#"{{"amount": {json}}}"#))
                .map(|money| money.amount.to_string())
                .map_err(|err| err.to_string())
        };
        // TC0: a string keeps its scale
        assert_eq!(amount(r#""0.0010""#), Ok("0.0010".to_owned()));
        // TC1: a whole number
        assert_eq!(amount("10000"), Ok("10000".to_owned()));
        // TC2: floats, signs and text outside the grammar are refused
        for (json, reason) in [
            ("10.5", "not a float"),
            ("-5", "no sign allowed"),
            (r#""1e-3""#, "invalid decimal"),
            (r#""1_000""#, "invalid decimal"),
        ] {
            let err = amount(json).unwrap_err();
            assert!(err.contains(reason), "{json}: {err}");
        }
    }
}
