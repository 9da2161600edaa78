//! The WebSocket upgrade request check (`GET /jet/...`, RFC 6455 §4.2.1).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jet_relay::fuzzing::ws_upgrade(data);
});
