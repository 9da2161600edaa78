//! The relay's HTTP/1.1 request reader (keep-alive, Content-Length bodies),
//! fed from the input in reads of a size set by its first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jet_relay::fuzzing::http_requests(data);
});
