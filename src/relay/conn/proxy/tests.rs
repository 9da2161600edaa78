//! The PROXY header read from in-memory streams: every form, every bad input,
//! and never a byte past the header.

use super::*;
use crate::wire::proxy_header::{encode_v1, encode_v2};

/// An in-memory stream that hands out at most `chunk` bytes per read, then
/// fails like a closed socket (or like a timeout, with `then_timeout`).
struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    then_timeout: bool,
}

impl Chunked {
    fn new(data: &[u8], chunk: usize) -> Chunked {
        Chunked {
            data: data.to_vec(),
            at: 0,
            chunk,
            then_timeout: false,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
        if n == 0 {
            return Err(if self.then_timeout {
                ReadError::Timeout
            } else {
                ReadError::Closed(io::ErrorKind::UnexpectedEof.into())
            });
        }
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }

    /// The bytes no read has taken.
    fn rest(&self) -> &[u8] {
        &self.data[self.at..]
    }
}

fn read_all(stream: &mut Chunked) -> Result<ProxyHeader, ProxyFailure> {
    read_header(&mut |buf| stream.read(buf))
}

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// What follows the header in the same write: a JET packet's first bytes.
const NEXT: &[u8] = b"JET\0\x00\x40\x00\x73 and more";

#[track_caller]
fn check_good(header: &[u8], source: Option<&str>, command: Command) {
    let mut wire = header.to_vec();
    wire.extend_from_slice(NEXT);
    for chunk in [1, 7, 16, 4096] {
        let mut stream = Chunked::new(&wire, chunk);
        let parsed = read_all(&mut stream).unwrap_or_else(|e| panic!("chunk {chunk}: {e:?}"));
        assert_eq!(parsed.source, source.map(sa), "chunk {chunk}");
        assert_eq!(parsed.command, command, "chunk {chunk}");
        // The next layer finds its bytes where they were.
        assert_eq!(stream.rest(), NEXT, "chunk {chunk}: read past the header");
    }
}

#[test]
fn every_header_form_is_read_whole_and_nothing_after_it() {
    let client = sa("203.0.113.7:40000");
    let relay = sa("10.0.0.2:8080");
    let client6 = sa("[2001:db8::7]:40000");
    let relay6 = sa("[2001:db8::2]:8080");
    check_good(
        &encode_v1(Some((client, relay))),
        Some("203.0.113.7:40000"),
        Command::Proxy,
    );
    check_good(
        &encode_v1(Some((client6, relay6))),
        Some("[2001:db8::7]:40000"),
        Command::Proxy,
    );
    check_good(&encode_v1(None), None, Command::Proxy);
    check_good(
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        None,
        Command::Proxy,
    );
    check_good(
        &encode_v2(Command::Proxy, Some((client, relay))),
        Some("203.0.113.7:40000"),
        Command::Proxy,
    );
    check_good(
        &encode_v2(Command::Proxy, Some((client6, relay6))),
        Some("[2001:db8::7]:40000"),
        Command::Proxy,
    );
    // HAProxy's health checks: LOCAL with AF_UNSPEC and an empty block.
    check_good(&encode_v2(Command::Local, None), None, Command::Local);
    // TLVs after the addresses: the length field alone says where it ends.
    let mut with_tlvs = encode_v2(Command::Proxy, Some((client, relay)));
    let tlvs = [0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x01, 0x00];
    let length = u16::from_be_bytes([with_tlvs[14], with_tlvs[15]]) + tlvs.len() as u16;
    with_tlvs[14..16].copy_from_slice(&length.to_be_bytes());
    with_tlvs.extend_from_slice(&tlvs);
    check_good(&with_tlvs, Some("203.0.113.7:40000"), Command::Proxy);
}

#[track_caller]
fn check_bad(wire: &[u8], expected: ProxyFailure) {
    for chunk in [1, 5, 4096] {
        let mut stream = Chunked::new(wire, chunk);
        assert_eq!(
            read_all(&mut stream),
            Err(expected),
            "chunk {chunk}: {wire:?}"
        );
    }
}

#[test]
fn a_request_without_a_header_is_a_missing_header() {
    check_bad(
        b"JET\0\x00\x40\x00\x73GET /jet/accept",
        ProxyFailure::Missing,
    );
    check_bad(b"GET /health HTTP/1.1\r\n\r\n", ProxyFailure::Missing);
    check_bad(
        b"POST /jet/gather/x HTTP/1.1\r\n\r\n",
        ProxyFailure::Missing,
    );
}

#[test]
fn other_first_bytes_are_a_wrong_signature() {
    // A TLS client hello, a v2 signature with one byte wrong, lowercase "proxy".
    check_bad(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ProxyFailure::WrongSignature,
    );
    check_bad(
        b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c",
        ProxyFailure::WrongSignature,
    );
    check_bad(
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ProxyFailure::WrongSignature,
    );
}

#[test]
fn a_stream_that_ends_inside_the_header_is_truncated() {
    let v2 = encode_v2(Command::Proxy, Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))));
    check_bad(&v2[..v2.len() - 1], ProxyFailure::Truncated);
    check_bad(&v2[..16], ProxyFailure::Truncated);
    check_bad(&v2[..5], ProxyFailure::Truncated);
    check_bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", ProxyFailure::Truncated);
    check_bad(b"PROXY TCP4 1.2.3.4", ProxyFailure::Truncated);
    check_bad(b"", ProxyFailure::Truncated);
}

#[test]
fn an_oversize_header_is_refused_without_reading_on() {
    let mut long_line = b"PROXY UNKNOWN ".to_vec();
    long_line.resize(200, b'x');
    long_line.extend_from_slice(b"\r\n");
    check_bad(&long_line, ProxyFailure::Oversize);
    let mut stream = Chunked::new(&long_line, 4096);
    let _ = read_all(&mut stream);
    assert_eq!(
        stream.at,
        proxy_header::MAX_V1_LEN,
        "a v1 line is given up after 107 bytes"
    );
    let mut huge = proxy_header::V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    huge.resize(70_000, 0);
    check_bad(&huge, ProxyFailure::Oversize);
    let mut stream = Chunked::new(&huge, 65536);
    let _ = read_all(&mut stream);
    assert_eq!(
        stream.at, 16,
        "a v2 length over the limit is refused before its payload"
    );
}

#[test]
fn an_unknown_version_is_counted_as_such() {
    let mut v3 = encode_v2(Command::Proxy, Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))));
    v3[12] = 0x31;
    check_bad(&v3, ProxyFailure::UnknownVersion);
    v3[12] = 0x11;
    check_bad(&v3, ProxyFailure::UnknownVersion);
}

#[test]
fn grammar_breaks_are_malformed() {
    let mut bad_command = encode_v2(Command::Proxy, Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))));
    bad_command[12] = 0x2f;
    check_bad(&bad_command, ProxyFailure::Malformed);
    let mut bad_family = encode_v2(Command::Proxy, Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))));
    bad_family[13] = 0x51;
    check_bad(&bad_family, ProxyFailure::Malformed);
    check_bad(
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        ProxyFailure::Malformed,
    );
    check_bad(
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        ProxyFailure::Malformed,
    );
    check_bad(
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        ProxyFailure::Malformed,
    );
}

#[test]
fn a_header_still_coming_at_the_deadline_is_a_timeout() {
    let v2 = encode_v2(Command::Proxy, Some((sa("1.2.3.4:5"), sa("6.7.8.9:10"))));
    for cut in [0, 3, 16, v2.len() - 1] {
        let mut stream = Chunked::new(&v2[..cut], 4096);
        stream.then_timeout = true;
        assert_eq!(
            read_all(&mut stream),
            Err(ProxyFailure::Timeout),
            "cut {cut}"
        );
    }
}

#[test]
fn requests_are_told_from_other_bytes_as_far_as_they_go() {
    for yes in [&b"J"[..], b"JET", b"G", b"GE", b"GET ", b"DELETE /"] {
        assert!(looks_like_a_request(yes), "{yes:?}");
    }
    for no in [&b""[..], b"x", b"JE\x01", b"G3", b"GETTINGS /", b"\x16\x03"] {
        assert!(!looks_like_a_request(no), "{no:?}");
    }
}
