//! WebSocket frames (RFC 6455 §5) through the relay's frame reader, in either
//! role, with short reads and bytes already buffered from the HTTP head; the
//! frames the writer sends back (pongs, close) decode again.
#![no_main]

use jet_relay::transport::ws::{self, Role};
use jet_relay::wire::websocket;
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// A stream that hands out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.chunk).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The write half: what the reader's pongs and our frames put on the wire.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, out_len, flags, rest @ ..] = data else {
        return;
    };
    let chunk = if *chunk == 0 {
        usize::MAX
    } else {
        usize::from(*chunk)
    };
    let out_len = usize::from(*out_len) + 1;
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let leftover_len = (usize::from(flags >> 1) * 8).min(rest.len());
    let (leftover, stream) = rest.split_at(leftover_len);
    let sink = Sink::default();
    let (mut reader, mut writer) = ws::new(
        Chunked {
            data: stream,
            chunk,
        },
        sink.clone(),
        role,
        leftover.to_vec(),
    );
    let mut out = vec![0u8; out_len];
    let mut payload = 0usize;
    // Each read returns data, or ends; it can never spin, so the reads are
    // bounded by the input's length.
    for _ in 0..=rest.len() + 1 {
        match reader.read(&mut out) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                assert!(n <= out_len);
                payload += n;
                assert!(payload <= rest.len(), "more payload than input");
            }
        }
    }
    let _ = writer.write_all(&out[..out_len.min(payload)]);
    let _ = writer.shutdown();
    // What the writer sent is a sequence of whole frames of the right role.
    let sent = sink.0.lock().unwrap().clone();
    let mut at = 0;
    while at < sent.len() {
        let (header, len) = websocket::decode_header(&sent[at..])
            .expect("our own frame header")
            .expect("a whole header");
        assert_eq!(header.mask.is_some(), role == Role::Client);
        assert!(header.fin);
        at += len + usize::try_from(header.len).expect("small");
    }
    assert_eq!(at, sent.len());
});
