//! JET packets off the wire, then the HTTP head inside them.
#![no_main]

use jet_relay::wire::{message, packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<{ packet::HEADER_LEN }>() {
        if let Ok(len) = packet::payload_len(header) {
            assert!(len + packet::HEADER_LEN <= packet::MAX_PACKET);
        }
    }
    let mut stream = data;
    // Packets back to back, as a relay reads a stream (each consumes exactly
    // its announced size).
    while let Ok(pkt) = packet::read_packet(&mut stream) {
        let consumed = data.len() - stream.len();
        assert!(consumed <= data.len());
        assert!(pkt.payload.len() + packet::HEADER_LEN <= packet::MAX_PACKET);
        // Re-encoding with the same mask gives the same bytes back.
        let again = packet::encode(&pkt.payload, pkt.mask).expect("it fit before");
        assert_eq!(again.len(), pkt.payload.len() + packet::HEADER_LEN);
        let _ = message::requested_version(&pkt.payload);
        if let Ok(request) = message::parse_request(&pkt.payload) {
            let _ = request.method().as_str();
            let _ = request.command.ids();
        }
        if let Ok(response) = message::parse_response(&pkt.payload) {
            let _ = response.header("Jet-Version");
        }
    }
    // The payload parsers on the raw bytes too (a mask of 0 is no mask).
    let _ = message::requested_version(data);
    let _ = message::parse_request(data);
    let _ = message::parse_response(data);
});
