//! The properties the coverage-guided fuzz targets (`fuzz/`, `make fuzz`) check, behind the
//! `fuzzing` feature. Each function panics when a property fails: that is the fuzzer's crash.

use crate::ClientMessage;
use crate::inbound::FrameMeter;
use crate::test_support::client_json;

/// Every error code docs/protocol.md documents for a request the parser refuses.
const PARSER_CODES: [&str; 8] = [
    "invalid_message",
    "unknown_type",
    "invalid_payload",
    "unknown_channel",
    "invalid_symbol",
    "invalid_client_order_id",
    "invalid_decimal",
    "invalid_size",
];

/// Limits the frame guard is fuzzed with: the smallest allowed, a small one, the default.
const LIMITS: [usize; 3] = [128, 1_000, 65_536];

/// `ClientMessage::parse` on any text: no panic; a refusal has a documented code and echoes the
/// `id` of an object frame; an accepted request parses again, unchanged, from its own encoding.
///
/// # Panics
/// When one of those properties fails.
pub fn check_client_message(text: &str) {
    match ClientMessage::parse(text) {
        Ok(message) => {
            let again = ClientMessage::parse(&client_json(&message));
            assert_eq!(again.as_ref(), Ok(&message), "re-encoding {text:?}");
        }
        Err(err) => {
            assert!(
                PARSER_CODES.contains(&err.code),
                "undocumented code {} for {text:?}",
                err.code
            );
            if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text)
                && let Some(id) = fields.get("id").filter(|id| !id.is_null())
            {
                assert_eq!(err.id.as_ref(), Some(id), "id not echoed for {text:?}");
            }
        }
    }
}

/// The inbound frame guard on any byte stream cut into any chunks. `data` is
/// `[limit selector, number of cuts n, n chunk lengths..., the stream...]`. No panic, and the
/// verdict (accepted, or refused and why) does not depend on how the stream was cut: it is the
/// verdict for the whole stream fed at once.
///
/// # Panics
/// When one of those properties fails.
pub fn check_frame_guard(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(cuts);
    let limit = LIMITS[usize::from(selector) % LIMITS.len()];
    let whole = FrameMeter::new(limit).feed(stream);
    let mut meter = FrameMeter::new(limit);
    let mut remaining = stream;
    let mut chunked = Ok(());
    let mut next = lengths.iter().cycle();
    while !remaining.is_empty() && chunked.is_ok() {
        let length = next
            .next()
            .map_or(remaining.len(), |&l| usize::from(l).max(1));
        let (chunk, tail) = remaining.split_at(length.min(remaining.len()));
        chunked = meter.feed(chunk);
        remaining = tail;
    }
    assert_eq!(chunked, whole, "limit {limit}, cut into {lengths:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_properties_hold_on_the_seed_shapes() {
        // TC0: requests, refusals with and without an id
        for text in [
            r#"{"type":"ping","id":1}"#,
            r#"{"type":"manual_trade","id":"t1","payload":{"symbol":"BTCUSDT","side":"buy","amount":"100"}}"#,
            r#"{"type":"subscribe","id":[1],"payload":{"channels":["orders"]}}"#,
            "not json",
            "",
        ] {
            check_client_message(text);
        }
        // TC1: a text frame over the limit, whole and cut every byte; reserved bits
        let mut over = vec![0, 4, 1, 1, 1, 1, 0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4];
        over.extend(std::iter::repeat_n(0, 256));
        check_frame_guard(&over);
        check_frame_guard(&[1, 0, 0xC1, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0]);
        check_frame_guard(&[]);
    }

    #[test]
    fn regressions_found_by_the_fuzzer() {
        // TC0: an id beyond u64 is a float; without serde_json's exact float parsing its echo
        // differed from the id in the last digit (fuzz/artifacts/client_message/crash-9a947bad).
        check_client_message(
            r#"{"type":"resume","id":2203665516852034113003,"payload":{"epoch":1796122240975559,"last_seq":{"ticker:BTCUSDTQQQQ":1444444444444444443}}}"#,
        );
        check_client_message(r#"{"type":"ping","id":0.30000000000000004}"#);
        check_client_message(r#"{"type":"ping","id":[1e-320, 1.7976931348623157e308]}"#);
    }
}
