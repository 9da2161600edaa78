//! RFC 6455 strictness of the WebSocket read half, table-driven: every frame a
//! conforming endpoint must reject fails the read and sends its close code.

use super::ws::{self, Role};
use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

/// The write half's bytes, kept for inspection after the test.
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

/// What reading a byte stream must come to.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// These data bytes, then a clean end.
    Data(&'static [u8]),
    /// A failed read, and a close frame with this code on the write side.
    Close(u16),
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: `first` is the FIN/RSV/opcode byte; masked when `masked`.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        0..=125 => out.push(bit | payload.len() as u8),
        126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        _ => {
            out.push(bit | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A client's (masked) frame, as the server reads it.
fn c(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, payload, true)
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// The code of the first close frame in `written` (frames of the given
/// role), if there is one.
fn close_code_written(written: &[u8]) -> Option<u16> {
    let mut at = 0;
    while let Ok(Some((header, used))) = crate::wire::websocket::decode_header(&written[at..]) {
        let start = at + used;
        let end = start + header.len as usize;
        let mut payload = written.get(start..end)?.to_vec();
        if let Some(mask) = header.mask {
            crate::wire::websocket::apply_mask(&mut payload, mask, 0);
        }
        if header.opcode == crate::wire::websocket::Opcode::Close {
            let code = payload.get(..2)?;
            return Some(u16::from_be_bytes([code[0], code[1]]));
        }
        at = end;
    }
    None
}

#[track_caller]
fn check(role: Role, frames: &[Vec<u8>], expected: Expect) {
    let input: Vec<u8> = frames.concat();
    let sink = Sink::default();
    let (mut reader, _writer) = ws::new(Cursor::new(input), sink.clone(), role, Vec::new());
    let mut data = Vec::new();
    let mut buf = [0u8; 7];
    let mut outcome = None;
    // Bounded: each read consumes at least one byte of a finite input.
    for _ in 0..10_000 {
        match reader.read(&mut buf) {
            Ok(0) => {
                outcome = Some(Ok(()));
                break;
            }
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => {
                outcome = Some(Err(e));
                break;
            }
        }
    }
    let written = sink.0.lock().unwrap().clone();
    let got = match outcome.expect("the read ended") {
        Ok(()) => {
            assert_eq!(
                close_code_written(&written),
                None,
                "no close frame for a clean read"
            );
            match expected {
                Expect::Data(want) => assert_eq!(data, want, "data relayed"),
                Expect::Close(code) => {
                    panic!("expected close {code}, read {data:?} and a clean end")
                }
            }
            return;
        }
        Err(e) => e,
    };
    match expected {
        Expect::Close(code) => {
            assert_eq!(
                close_code_written(&written),
                Some(code),
                "close frame sent; read error {got}"
            );
            assert_eq!(ws::close_code(&got), Some(code), "the error names the code");
        }
        Expect::Data(want) => panic!("expected {want:?}, got error {got} after {data:?}"),
    }
}

#[test]
fn frames_rfc_6455_forbids_fail_with_1002() {
    let s = Role::Server;
    // A continuation with no message started.
    check(s, &[c(0x80, b"x")], Expect::Close(1002));
    check(s, &[c(0x00, b"x")], Expect::Close(1002));
    // A new data frame while a fragmented message is open.
    check(s, &[c(0x02, b"ab"), c(0x82, b"cd")], Expect::Close(1002));
    check(s, &[c(0x01, b"ab"), c(0x81, b"cd")], Expect::Close(1002));
    check(s, &[c(0x01, b"ab"), c(0x82, b"cd")], Expect::Close(1002));
    // Reserved bits without an extension.
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        check(s, &[c(0x82 | rsv, b"x")], Expect::Close(1002));
    }
    // Unknown opcodes, data and control.
    for op in [0x3, 0x7, 0xB, 0xF] {
        check(s, &[c(0x80 | op, b"")], Expect::Close(1002));
    }
    // Fragmented or oversized control frames.
    check(s, &[c(0x09, b"ping")], Expect::Close(1002));
    check(s, &[c(0x89, &[0; 126])], Expect::Close(1002));
    check(
        s,
        &[c(0x88, &close_payload(1000, &[b'x'; 124]))],
        Expect::Close(1002),
    );
    // Masking in the wrong direction.
    check(s, &[frame(0x82, b"x", false)], Expect::Close(1002));
    check(
        Role::Client,
        &[frame(0x82, b"x", true)],
        Expect::Close(1002),
    );
}

#[test]
fn close_frames_with_an_invalid_payload_fail_with_1002_or_1007() {
    let s = Role::Server;
    check(s, &[c(0x88, &[0x03])], Expect::Close(1002));
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        check(
            s,
            &[c(0x88, &close_payload(code, b""))],
            Expect::Close(1002),
        );
    }
    check(
        s,
        &[c(0x88, &close_payload(1000, b"\xff"))],
        Expect::Close(1007),
    );
    check(
        s,
        &[c(0x88, &close_payload(1000, b"ok\xc3"))],
        Expect::Close(1007),
    );
}

#[test]
fn valid_close_frames_end_the_stream_cleanly() {
    let s = Role::Server;
    check(s, &[c(0x82, b"hi"), c(0x88, b"")], Expect::Data(b"hi"));
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 4999,
    ] {
        check(
            s,
            &[c(0x88, &close_payload(code, b"bye"))],
            Expect::Data(b""),
        );
    }
    let reason = "fermé".as_bytes();
    check(
        s,
        &[c(0x88, &close_payload(1000, reason))],
        Expect::Data(b""),
    );
}

#[test]
fn invalid_utf8_in_text_fails_with_1007_even_split_across_fragments() {
    let s = Role::Server;
    for bad in [
        &b"\xff"[..],
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"ok\xf5\x80\x80\x80",
        b"\x80",
    ] {
        check(s, &[c(0x81, bad)], Expect::Close(1007));
    }
    // A message that ends inside a code point.
    check(s, &[c(0x81, b"\xe2\x82")], Expect::Close(1007));
    check(
        s,
        &[c(0x01, b"a\xe2"), c(0x80, b"\x82")],
        Expect::Close(1007),
    );
    // A split code point whose continuation is not one.
    check(s, &[c(0x01, b"\xc3"), c(0x80, b"(")], Expect::Close(1007));
    check(
        s,
        &[c(0x01, b"\xf0\x9f"), c(0x00, b"\x98"), c(0x80, b"\x28")],
        Expect::Close(1007),
    );
}

#[test]
fn valid_text_split_anywhere_and_any_binary_are_carried() {
    let s = Role::Server;
    check(
        s,
        &[c(0x81, "héllo".as_bytes())],
        Expect::Data("héllo".as_bytes()),
    );
    check(
        s,
        &[c(0x01, b"\xc3"), c(0x80, b"\xa9")],
        Expect::Data("é".as_bytes()),
    );
    check(
        s,
        &[c(0x01, b"\xf0"), c(0x00, b"\x9f\x98"), c(0x80, b"\x80!")],
        Expect::Data("😀!".as_bytes()),
    );
    // A ping between fragments is allowed; its payload is not data.
    check(
        s,
        &[c(0x01, b"\xe2\x82"), c(0x89, b"p"), c(0x80, b"\xac")],
        Expect::Data("€".as_bytes()),
    );
    // Binary payloads are not text: no UTF-8 check.
    check(
        s,
        &[c(0x82, b"\xff\xfe"), c(0x02, b"\xc3"), c(0x80, b"(")],
        Expect::Data(b"\xff\xfe\xc3("),
    );
    // A long text frame read in small pieces, with multi-byte characters
    // straddling every read boundary.
    let long = "añ€😀".repeat(40);
    let leaked: &'static [u8] = Box::leak(long.into_bytes().into_boxed_slice());
    check(s, &[c(0x81, leaked)], Expect::Data(leaked));
    check(
        Role::Client,
        &[frame(0x81, b"ok", false)],
        Expect::Data(b"ok"),
    );
}

#[test]
fn lengths_with_the_top_bit_set_fail_with_1009() {
    for len in [1u64 << 63, u64::MAX] {
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&MASK);
        check(Role::Server, &[bytes], Expect::Close(1009));
    }
}
