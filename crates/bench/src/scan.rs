//! Byte scans of a frame's JSON text: enough to find `ts_us` and `seq` without parsing it.

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

/// The unsigned integer right after the last occurrence of `key` (top-level fields of our frames
/// come after the payload, so the last occurrence is the envelope's).
pub(crate) fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let start = haystack.windows(key.len()).rposition(|w| w == key)? + key.len();
    let digits = haystack[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0_u64, |n, b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })?;
    (start < haystack.len() && haystack[start].is_ascii_digit()).then_some(digits)
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
}
