//! PROXY protocol v1 and v2 headers; what parses re-encodes to the same
//! addresses.
#![no_main]

use jet_relay::wire::proxy_header::{
    encode_v1, encode_v2, parse, parse_at_eof, Command, Parsed, ProxyHeader, MAX_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, SocketAddr};

/// Both families as IPv6 (the encoders map a mixed pair to IPv6).
fn v6(addr: SocketAddr) -> (std::net::Ipv6Addr, u16) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (ip, addr.port())
}

fn addrs(h: &ProxyHeader) -> Option<(SocketAddr, SocketAddr)> {
    h.source.zip(h.destination)
}

fn same_addrs(a: &ProxyHeader, b: &ProxyHeader) {
    let norm = |h: &ProxyHeader| addrs(h).map(|(s, d)| (v6(s), v6(d)));
    assert_eq!(norm(a), norm(b), "{a:?} vs {b:?}");
}

fn complete(bytes: &[u8]) -> ProxyHeader {
    match parse(bytes) {
        Ok(Parsed::Complete { header, consumed }) => {
            assert_eq!(consumed, bytes.len(), "{bytes:?}");
            header
        }
        other => panic!("own encoding {bytes:?} parses as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Incomplete { need_at_least }) => {
            assert!(
                need_at_least > data.len(),
                "{need_at_least} <= {}",
                data.len()
            );
            assert!(need_at_least <= MAX_HEADER_LEN);
            assert!(parse_at_eof(data).is_err());
        }
        Ok(Parsed::Complete { header, consumed }) => {
            assert!(consumed <= data.len() && consumed <= MAX_HEADER_LEN);
            // The header alone parses the same, and so at end of stream.
            assert_eq!(
                parse(&data[..consumed]),
                Ok(Parsed::Complete { header, consumed })
            );
            assert_eq!(parse_at_eof(data), Ok((header, consumed)));
            if header.source.is_some() != header.destination.is_some() {
                panic!("half an address pair: {header:?}");
            }
            // Round trips through both encoders.
            let pair = addrs(&header);
            let v1 = complete(&encode_v1(pair));
            same_addrs(&header, &v1);
            let v2 = complete(&encode_v2(Command::Proxy, pair));
            assert_eq!(v2.command, Command::Proxy);
            same_addrs(&header, &v2);
            // A LOCAL header's addresses are not the client's: dropped.
            let local = complete(&encode_v2(Command::Local, pair));
            assert_eq!(local.command, Command::Local);
            assert_eq!(addrs(&local), None, "{local:?}");
        }
        Err(_) => assert!(parse_at_eof(data).is_err()),
    }
});
