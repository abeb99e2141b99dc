//! The inbound frame guard (`crates/ws-gateway/src/inbound.rs`) on raw bytes cut into arbitrary
//! chunks: see `cryptobot_ws_gateway::fuzzing::check_frame_guard` for the input layout.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cryptobot_ws_gateway::fuzzing::check_frame_guard(data);
});
