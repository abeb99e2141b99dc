//! Bounded fuzzing of the inbound parser: arbitrary text and JSON-shaped envelopes never panic,
//! always yield a request or a documented error code, and accepted requests survive re-encoding.

use cryptobot_ws_gateway::ClientMessage;
use cryptobot_ws_gateway::test_support::client_json;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Every error code docs/protocol.md documents.
const DOCUMENTED_CODES: &[&str] = &[
    "invalid_message",
    "unknown_type",
    "invalid_payload",
    "unknown_channel",
    "unknown_symbol",
    "too_many_subscriptions",
    "rate_limited",
    "forbidden",
    "invalid_symbol",
    "invalid_size",
    "invalid_client_order_id",
    "invalid_levels",
    "invalid_decimal",
    "no_price",
    "order_too_small",
    "insufficient_funds",
    "insufficient_position",
    "no_position",
    "duplicate_client_order_id",
    "storage_error",
    "engine_fenced",
    "unavailable",
    "invalid_order",
    "invalid_limit",
    "invalid_query",
    "unknown_order",
    "order_not_open",
    "post_only_would_cross",
    "too_many_orders",
];

/// The message types a client can send, plus a few that are not.
const TYPES: &[&str] = &[
    "subscribe_ticker",
    "unsubscribe_ticker",
    "subscribe",
    "unsubscribe",
    "resume",
    "manual_trade",
    "update_position",
    "ping",
    "list_subscriptions",
    "place_order",
    "cancel_order",
    "cancel_all_orders",
    "list_orders",
    "",
    "PING",
    "launch",
];

/// Field names the payloads use, plus one that none does.
const FIELDS: &[&str] = &[
    "symbol",
    "side",
    "quantity",
    "amount",
    "client_order_id",
    "stop_loss",
    "take_profit",
    "channels",
    "resume",
    "epoch",
    "last_seq",
    "type",
    "price",
    "stop_price",
    "time_in_force",
    "post_only",
    "order_id",
    "status",
    "limit",
    "before_id",
    "extra",
];

/// Strings that hit the interesting branches more often than random text does.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("BTCUSDT".to_owned()),
        Just("ETHUSDT".to_owned()),
        Just("DOGEUSDT".to_owned()),
        Just("buy".to_owned()),
        Just("sell".to_owned()),
        Just("hold".to_owned()),
        Just("0.1".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e400".to_owned()),
        Just("1_000".to_owned()),
        Just("+1".to_owned()),
        Just(".5".to_owned()),
        Just("99999999999999999999999999999999".to_owned()),
        Just("ticker:BTCUSDT".to_owned()),
        Just("trades".to_owned()),
        Just("portfolio".to_owned()),
        Just("signals".to_owned()),
        Just("alerts".to_owned()),
        Just("ticker:".to_owned()),
        "\\PC{0,40}",
    ]
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    nested(prop_oneof![
        exact_leaf(),
        any::<f64>().prop_map(Value::from),
    ])
}

/// Ids: any JSON, floats included (serde_json's `float_roundtrip` makes their echo exact).
fn id_value() -> impl Strategy<Value = Value> {
    json_value()
}

/// JSON leaves that re-encode exactly.
fn exact_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ]
}

/// Arrays and objects of `leaf`, a few levels deep.
fn nested(leaf: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Value> {
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(interesting_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload object built from the real field names with random values.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..6).prop_map(
            |pairs| {
                let mut map = Map::new();
                for (key, value) in pairs {
                    map.insert(key.to_owned(), value);
                }
                Value::Object(map)
            }
        ),
        1 => json_value(),
    ]
}

/// An envelope: a real (or wrong) type, a payload, and sometimes an id.
fn envelope() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        payload(),
        prop::option::of(id_value()),
    )
        .prop_map(|(kind, payload, id)| {
            let mut map = Map::new();
            map.insert("type".to_owned(), Value::String(kind.to_owned()));
            map.insert("payload".to_owned(), payload);
            if let Some(id) = id {
                map.insert("id".to_owned(), id);
            }
            Value::Object(map)
        })
}

/// Parses `text`; on success checks that the re-encoded request parses to the same request.
fn check(text: &str) -> Result<(), TestCaseError> {
    match ClientMessage::parse(text) {
        Ok(message) => {
            let again = ClientMessage::parse(&client_json(&message));
            prop_assert_eq!(again, Ok(message), "re-encoding {}", text);
        }
        Err(err) => {
            prop_assert!(
                DOCUMENTED_CODES.contains(&err.code),
                "undocumented code {} for {}",
                err.code,
                text
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_yields_documented_codes(text in "\\PC{0,200}") {
        check(&text)?;
    }

    #[test]
    fn arbitrary_envelopes_never_panic_and_requests_round_trip(envelope in envelope()) {
        check(&envelope.to_string())?;
    }

    #[test]
    fn truncated_envelopes_never_panic(envelope in envelope(), cut in any::<prop::sample::Index>()) {
        let text = envelope.to_string();
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        check(&text[..end])?;
    }
}
