//! Table-driven tests of the PROXY header parser and encoders.

use super::*;
use ProxyHeaderError as E;

#[track_caller]
fn check(input: &[u8], expected: Result<Parsed, ProxyHeaderError>) {
    assert_eq!(
        parse(input),
        expected,
        "input {:?}",
        String::from_utf8_lossy(input)
    );
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn complete(
    version: Version,
    command: Command,
    addrs: Option<(&str, &str)>,
    consumed: usize,
) -> Result<Parsed, ProxyHeaderError> {
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version,
            command,
            source: addrs.map(|(s, _)| sa(s)),
            destination: addrs.map(|(_, d)| sa(d)),
        },
        consumed,
    })
}

/// A v2 header from its parts, with `payload` after the fixed 16 bytes.
fn v2(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The fixed 16 bytes only, announcing `length` payload bytes.
fn v2_fixed(ver_cmd: u8, fam: u8, length: u16) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&length.to_be_bytes());
    out
}

const INET_BLOCK: [u8; 12] = [10, 0, 0, 1, 192, 168, 1, 2, 0x04, 0xd2, 0x01, 0xbb];

fn inet6_block() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets());
    b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    b.extend_from_slice(&[0xff, 0xff, 0x00, 0x50]);
    b
}

fn with_tlvs(mut block: Vec<u8>) -> Vec<u8> {
    // ALPN "h2", a NOOP of 3 bytes, a 128-byte unique id: skipped, not read.
    block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
    block.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
    block.extend_from_slice(&[0x05, 0x00, 0x80]);
    block.extend_from_slice(&[0xab; 128]);
    block
}

const TCP4_LINE: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
const TCP6_LINE: &[u8] = b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
/// The spec's worst case: exactly [`MAX_V1_LEN`] bytes.
const LONGEST_LINE: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

/// Every valid header form, with what it parses to.
fn good_headers() -> Vec<(Vec<u8>, Result<Parsed, ProxyHeaderError>)> {
    use Command::{Local, Proxy};
    use Version::{V1, V2};
    let v4 = Some(("10.0.0.1:1234", "192.168.1.2:443"));
    let v6 = Some(("[2001:db8::1]:65535", "[::1]:80"));
    let unix = [0x2f; 216];
    let big = vec![0u8; MAX_V2_PAYLOAD];
    vec![
        (
            TCP4_LINE.to_vec(),
            complete(
                V1,
                Proxy,
                Some(("192.168.0.1:56324", "192.168.0.11:443")),
                47,
            ),
        ),
        (
            TCP6_LINE.to_vec(),
            complete(V1, Proxy, Some(("[2001:db8::1]:0", "[::1]:65535")), 36),
        ),
        (
            b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n".to_vec(),
            complete(V1, Proxy, Some(("[::ffff:1.2.3.4]:1", "[::1]:2")), 35),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), complete(V1, Proxy, None, 15)),
        (
            b"PROXY UNKNOWN whatever the sender likes\r\n".to_vec(),
            complete(V1, Proxy, None, 41),
        ),
        (LONGEST_LINE.to_vec(), complete(V1, Proxy, None, MAX_V1_LEN)),
        (v2(0x21, 0x11, &INET_BLOCK), complete(V2, Proxy, v4, 28)),
        (v2(0x21, 0x12, &INET_BLOCK), complete(V2, Proxy, v4, 28)),
        (v2(0x21, 0x21, &inet6_block()), complete(V2, Proxy, v6, 52)),
        (
            v2(0x21, 0x11, &with_tlvs(INET_BLOCK.to_vec())),
            complete(V2, Proxy, v4, 28 + 142),
        ),
        (
            v2(0x21, 0x21, &with_tlvs(inet6_block())),
            complete(V2, Proxy, v6, 52 + 142),
        ),
        (v2(0x21, 0x00, &[]), complete(V2, Proxy, None, 16)),
        (v2(0x21, 0x00, &INET_BLOCK), complete(V2, Proxy, None, 28)),
        (v2(0x21, 0x10, &INET_BLOCK), complete(V2, Proxy, None, 28)),
        (v2(0x21, 0x31, &unix), complete(V2, Proxy, None, 232)),
        (
            v2(0x21, 0x00, &big),
            complete(V2, Proxy, None, MAX_HEADER_LEN),
        ),
        (v2(0x20, 0x00, &[]), complete(V2, Local, None, 16)),
        (v2(0x20, 0x11, &INET_BLOCK), complete(V2, Local, None, 28)),
        // LOCAL ignores the family byte, as the spec says.
        (v2(0x20, 0xff, &[1, 2, 3]), complete(V2, Local, None, 19)),
    ]
}

#[test]
fn parses_every_header_form() {
    for (input, expected) in good_headers() {
        check(&input, expected);
    }
}

#[test]
fn leaves_the_bytes_after_the_header_alone() {
    for (mut input, expected) in good_headers() {
        input.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\n\0");
        check(&input, expected);
    }
}

#[test]
fn every_prefix_is_incomplete_then_truncated_at_eof() {
    for (input, _) in good_headers() {
        for n in 0..input.len() {
            let prefix = &input[..n];
            let Ok(Parsed::Incomplete { need_at_least }) = parse(prefix) else {
                panic!("prefix {n} of {:?}: {:?}", input, parse(prefix));
            };
            assert!(
                need_at_least > n && need_at_least <= input.len(),
                "prefix {n} of {input:?}: need_at_least {need_at_least}"
            );
            assert_eq!(
                parse_at_eof(prefix),
                Err(E::Truncated {
                    have: n,
                    need_at_least
                })
            );
        }
    }
}

#[test]
fn incomplete_says_how_much_to_read() {
    check(
        b"",
        Ok(Parsed::Incomplete {
            need_at_least: MIN_V1_LEN,
        }),
    );
    check(
        b"\r\n\r",
        Ok(Parsed::Incomplete {
            need_at_least: V2_FIXED_LEN,
        }),
    );
    check(
        &v2_fixed(0x21, 0x11, 300),
        Ok(Parsed::Incomplete { need_at_least: 316 }),
    );
    check(
        b"PROXY TCP4 1.2.3.4",
        Ok(Parsed::Incomplete { need_at_least: 19 }),
    );
    check(
        b"PROXY UNKNOWN\r",
        Ok(Parsed::Incomplete { need_at_least: 15 }),
    );
}

#[test]
fn refuses_every_bad_input() {
    use V1Fault::*;
    let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
        // Wrong signature, as soon as one byte differs.
        (b"GET / HTTP/1.1\r\n".to_vec(), E::WrongSignature),
        (b"\x16\x03\x01".to_vec(), E::WrongSignature),
        (b"\r\nGET".to_vec(), E::WrongSignature),
        (
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\0".to_vec(),
            E::WrongSignature,
        ),
        (b"PROXYTCP4".to_vec(), E::WrongSignature),
        (b"PROXY\r\n".to_vec(), E::WrongSignature),
        (b"proxy TCP4".to_vec(), E::WrongSignature),
        // Oversize.
        ([b"PROXY ".as_slice(), &[b'a'; 101]].concat(), E::V1TooLong),
        (
            [b"PROXY ".as_slice(), &[b'a'; 100], b"\r"].concat(),
            E::V1TooLong,
        ),
        (
            [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 92], b"\r\n"].concat(),
            E::V1TooLong,
        ),
        (v2_fixed(0x21, 0x11, 4097), E::V2TooLong { length: 4097 }),
        (
            v2_fixed(0x21, 0x11, u16::MAX),
            E::V2TooLong { length: 65535 },
        ),
        // v2 version, command, family.
        (v2(0x11, 0x11, &INET_BLOCK), E::UnknownVersion(1)),
        (v2(0x31, 0x11, &INET_BLOCK), E::UnknownVersion(3)),
        (v2(0x01, 0x00, &[]), E::UnknownVersion(0)),
        (v2(0x22, 0x11, &INET_BLOCK), E::UnknownCommand(2)),
        (v2(0x2f, 0x00, &[]), E::UnknownCommand(0xf)),
        (v2(0x21, 0x41, &INET_BLOCK), E::UnknownFamily(0x41)),
        (v2(0x21, 0x13, &INET_BLOCK), E::UnknownFamily(0x13)),
        (v2(0x21, 0x03, &[]), E::UnknownFamily(0x03)),
        // v2 length too short for the family's addresses.
        (
            v2(0x21, 0x11, &INET_BLOCK[..11]),
            E::V2AddressTooShort {
                family: 0x11,
                length: 11,
            },
        ),
        (
            v2(0x21, 0x21, &[0; 35]),
            E::V2AddressTooShort {
                family: 0x21,
                length: 35,
            },
        ),
        (
            v2(0x21, 0x22, &INET_BLOCK),
            E::V2AddressTooShort {
                family: 0x22,
                length: 12,
            },
        ),
        // v1 line ending and bytes.
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            E::V1Malformed(BareLf),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n".to_vec(),
            E::V1Malformed(BareCr),
        ),
        (b"PROXY TCP4 1.2.3.4\x005".to_vec(), E::V1Malformed(BadByte)),
        (b"PROXY TCP4\t1.2.3.4".to_vec(), E::V1Malformed(BadByte)),
        (
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2é\r\n".as_bytes().to_vec(),
            E::V1Malformed(BadByte),
        ),
        // v1 protocol and field count.
        (
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            E::V1UnknownProtocol,
        ),
        (
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            E::V1UnknownProtocol,
        ),
        (b"PROXY \r\n".to_vec(), E::V1UnknownProtocol),
        (
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            E::V1UnknownProtocol,
        ),
        (b"PROXY UNKNOWNX\r\n".to_vec(), E::V1UnknownProtocol),
        (b"PROXY TCP4\r\n".to_vec(), E::V1Malformed(FieldCount)),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
            E::V1Malformed(FieldCount),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n".to_vec(),
            E::V1Malformed(FieldCount),
        ),
        (
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(),
            E::V1Malformed(FieldCount),
        ),
        // v1 addresses.
        (
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n".to_vec(),
            E::V1Malformed(SourceAddress),
        ),
        (
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            E::V1Malformed(SourceAddress),
        ),
        (
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n".to_vec(),
            E::V1Malformed(SourceAddress),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.x 1 2\r\n".to_vec(),
            E::V1Malformed(DestinationAddress),
        ),
        (
            b"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n".to_vec(),
            E::V1Malformed(SourceAddress),
        ),
        (
            b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n".to_vec(),
            E::V1Malformed(DestinationAddress),
        ),
        (
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(),
            E::V1Malformed(FamilyMismatch),
        ),
        (
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n".to_vec(),
            E::V1Malformed(FamilyMismatch),
        ),
        (
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n".to_vec(),
            E::V1Malformed(FamilyMismatch),
        ),
        // v1 ports.
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
            E::V1Malformed(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
            E::V1Malformed(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n".to_vec(),
            E::V1Malformed(SourcePort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n".to_vec(),
            E::V1Malformed(DestinationPort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n".to_vec(),
            E::V1Malformed(DestinationPort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n".to_vec(),
            E::V1Malformed(DestinationPort),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999999999999999999\r\n".to_vec(),
            E::V1Malformed(DestinationPort),
        ),
    ];
    for (input, error) in cases {
        check(&input, Err(error));
    }
}

#[test]
fn every_error_has_its_own_message() {
    let errors = [
        E::Truncated {
            have: 3,
            need_at_least: 15,
        },
        E::V1TooLong,
        E::V2TooLong { length: 5000 },
        E::WrongSignature,
        E::UnknownVersion(1),
        E::UnknownCommand(2),
        E::UnknownFamily(0x41),
        E::V1UnknownProtocol,
        E::V2AddressTooShort {
            family: 0x11,
            length: 2,
        },
        E::V1Malformed(V1Fault::BareCr),
        E::V1Malformed(V1Fault::BareLf),
        E::V1Malformed(V1Fault::BadByte),
        E::V1Malformed(V1Fault::FieldCount),
        E::V1Malformed(V1Fault::SourceAddress),
        E::V1Malformed(V1Fault::DestinationAddress),
        E::V1Malformed(V1Fault::SourcePort),
        E::V1Malformed(V1Fault::DestinationPort),
        E::V1Malformed(V1Fault::FamilyMismatch),
    ];
    let messages: std::collections::HashSet<String> =
        errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), errors.len(), "{messages:?}");
    assert!(messages.iter().all(|m| m.contains("PROXY")), "{messages:?}");
}

#[test]
fn encoders_round_trip_through_the_parser() {
    let v4 = (sa("10.1.2.3:40000"), sa("127.0.0.1:8080"));
    let v6 = (sa("[2001:db8::7]:1"), sa("[::1]:2"));
    let mixed = (sa("10.1.2.3:5"), sa("[::1]:6"));
    let mapped = (sa("[::ffff:10.1.2.3]:5"), sa("[::1]:6"));
    for (addrs, want) in [(v4, v4), (v6, v6), (mixed, mapped)] {
        for (bytes, version) in [
            (encode_v1(Some(addrs)), Version::V1),
            (encode_v2(Command::Proxy, Some(addrs)), Version::V2),
        ] {
            let header = ProxyHeader {
                version,
                command: Command::Proxy,
                source: Some(want.0),
                destination: Some(want.1),
            };
            let consumed = bytes.len();
            check(&bytes, Ok(Parsed::Complete { header, consumed }));
        }
    }
    assert_eq!(encode_v1(None), b"PROXY UNKNOWN\r\n");
    assert_eq!(encode_v2(Command::Local, None), v2(0x20, 0x00, &[]));
    assert_eq!(encode_v2(Command::Proxy, Some(v4)).len(), 28);
}

#[test]
fn mutated_headers_never_panic_and_never_overrun() {
    // Every byte of every valid header replaced by a set of hostile values:
    // whatever the parser says, it must say it without panicking, and a
    // complete header never claims more bytes than it was given.
    const HOSTILE: [u8; 8] = [0x00, 0x0a, 0x0d, 0x20, 0x30, 0x7f, 0x80, 0xff];
    for (input, _) in good_headers() {
        for at in 0..input.len() {
            for value in HOSTILE.into_iter().chain([input[at] ^ 1]) {
                let mut bytes = input.clone();
                bytes[at] = value;
                if let Ok(Parsed::Complete { consumed, .. }) = parse(&bytes) {
                    assert!(consumed <= bytes.len(), "{bytes:?}");
                }
            }
        }
    }
}

/// Bytes captured from HAProxy 2.6.12 with `send-proxy-v2` (dist/haproxy):
/// an `option httpchk` health check, a layer-4 check, and a relayed client.
#[test]
fn parses_what_haproxy_2_6_sends() {
    let http_check = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00GET /health HTTP/1.0\r\n\r\n";
    let l4_check = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let client = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x01\x7f\x00\x00\x01\xed\x16\x8e\xf3GET /jet/association/abc HTTP/1.1\r\n";
    let local = complete(Version::V2, Command::Local, None, 16);
    check(http_check, local);
    check(l4_check, local);
    check(
        client,
        complete(
            Version::V2,
            Command::Proxy,
            Some(("127.0.0.1:60694", "127.0.0.1:36595")),
            28,
        ),
    );
}
