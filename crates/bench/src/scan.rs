//! Byte scans of a frame's JSON text: enough to find `ts_us`, `seq`, ids and the channel without
//! parsing it.

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The unsigned integer starting at `start`, if there is one (and it fits in a `u64`).
fn digits_at(haystack: &[u8], start: usize) -> Option<u64> {
    let rest = haystack.get(start..)?;
    if !rest.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    rest.iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0_u64, |n, b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
}

/// The unsigned integer right after the last occurrence of `key` (top-level fields of our frames
/// come after the payload, so the last occurrence is the envelope's).
pub(crate) fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    digits_at(haystack, rfind(haystack, key)? + key.len())
}

/// The unsigned integer right after the first occurrence of `key`: the payload's first field,
/// e.g. the trade id of a `trade_notification` (`"payload":{"id":12,...`).
pub(crate) fn first_number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    digits_at(haystack, find(haystack, key)? + key.len())
}

/// The text of a JSON string right after the first occurrence of `key`, which ends with the
/// opening quote (e.g. `"channel":"`), up to the closing quote. `None` for a string holding an
/// escape or one that does not end.
pub(crate) fn string_after<'a>(haystack: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(haystack, key)? + key.len();
    let rest = haystack.get(start..)?;
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    (rest[end] == b'"').then_some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_envelope_fields() {
        let frame = br#"{"type":"ticker_update","channel":"ticker:BTCUSDT","payload":{"symbol":"BTCUSDT","seq":"x"},"timestamp":1704067200,"ts_us":1704067200000123,"seq":42}"#;
        assert!(contains(frame, b"\"ticker_update\""));
        assert_eq!(
            number_after(frame, b"\"ts_us\":"),
            Some(1_704_067_200_000_123)
        );
        assert_eq!(number_after(frame, b"\"seq\":"), Some(42));
        // TC1: absent, not a number, overflow
        assert_eq!(number_after(frame, b"\"nope\":"), None);
        assert_eq!(number_after(br#"{"seq":"7"}"#, b"\"seq\":"), None);
        assert_eq!(
            number_after(br#"{"seq":99999999999999999999999}"#, b"\"seq\":"),
            None
        );
        assert!(!contains(b"ab", b"abc"));
    }

    #[test]
    fn finds_the_trade_id_and_the_channel() {
        // The shape of docs/protocol.md's trade_notification example.
        let frame = br#"{"type":"trade_notification","channel":"trades","payload":{"id":12,"symbol":"BTCUSDT","side":"buy","price":"42000.5","client_order_id":null,"origin":"auto","type":"buy"},"timestamp":1704067200,"ts_us":1704067200000000,"seq":7}"#;
        assert_eq!(first_number_after(frame, b"\"id\":"), Some(12));
        assert_eq!(number_after(frame, b"\"seq\":"), Some(7));
        assert_eq!(string_after(frame, b"\"channel\":\""), Some(&b"trades"[..]));
        // The first occurrence wins, not the last: the REST reply nests the trade first.
        let reply =
            br#"{"trade":{"id":3,"symbol":"BTCUSDT"},"replayed":false,"idempotent":true,"id":9}"#;
        assert_eq!(first_number_after(reply, b"\"id\":"), Some(3));
        assert_eq!(number_after(reply, b"\"id\":"), Some(9));
        // TC1: an id that is not a number, a key at the very end, an unterminated or escaped string
        assert_eq!(first_number_after(br#"{"id":"t1"}"#, b"\"id\":"), None);
        assert_eq!(first_number_after(br#"{"id":"#, b"\"id\":"), None);
        assert_eq!(
            string_after(br#"{"channel":"tick"#, b"\"channel\":\""),
            None
        );
        assert_eq!(
            string_after(br#"{"channel":"a\"b"}"#, b"\"channel\":\""),
            None
        );
        assert_eq!(
            string_after(br#"{"channel":""}"#, b"\"channel\":\""),
            Some(&b""[..])
        );
    }
}
