//! `ClientMessage::parse` on arbitrary text (invalid UTF-8 is refused by the socket before it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        cryptobot_ws_gateway::fuzzing::check_client_message(text);
    }
});
