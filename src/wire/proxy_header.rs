//! The HAProxy PROXY protocol header (v1 text, v2 binary) as data: parse and encode, no I/O.

// Facts from haproxy's doc/proxy-protocol.txt. A receiver configured for the
// PROXY protocol must not guess whether a header is present, so `parse` fails
// on anything that does not start like one; it never reads past the header,
// so the bytes after `consumed` belong to the next protocol layer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 line including its CRLF ("PROXY UNKNOWN" with two full IPv6
/// addresses and ports): a line without CRLF in this many bytes is refused.
pub const MAX_V1_LEN: usize = 107;
/// The shortest v1 line ("PROXY UNKNOWN\r\n"), a lower bound while nothing is known.
pub const MIN_V1_LEN: usize = 15;
/// The v2 signature, the ver/cmd byte, the fam/proto byte and the u16 length.
pub const V2_FIXED_LEN: usize = 16;
/// The largest v2 length field (addresses plus TLVs) we accept. The spec allows
/// 65535; what senders emit is addresses (at most 216 bytes for AF_UNIX) plus a
/// few TLVs (ALPN, authority, a 128-byte unique id, SSL details, a cloud
/// endpoint id), far below 4 KiB. Capping it bounds what a connection may make
/// us buffer before the first byte of JET is seen.
pub const MAX_V2_PAYLOAD: usize = 4096;
/// The longest header [`parse`] can accept; a read buffer this large always
/// holds a whole header.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + MAX_V2_PAYLOAD;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

const V2_VERSION: u8 = 0x2;
const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
const AF_UNSPEC: u8 = 0x0;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const PROTO_UNSPEC: u8 = 0x0;
const PROTO_STREAM: u8 = 0x1;
const PROTO_DGRAM: u8 = 0x2;
/// Two IPv4 addresses and two ports.
const V2_INET_LEN: usize = 12;
/// Two IPv6 addresses and two ports.
const V2_INET6_LEN: usize = 36;

/// Which form of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary block.
    V2,
}

/// What the proxy says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relayed on behalf of a client (every v1 header, v2 command 0x1).
    Proxy,
    /// Opened by the proxy itself (v2 command 0x0); the addresses are those
    /// of the socket. HAProxy's health checks are LOCAL (`option httpchk`
    /// sends LOCAL then `GET /health`), so refusing LOCAL outright marks the
    /// instance down.
    Local,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// v1 or v2.
    pub version: Version,
    /// PROXY or LOCAL.
    pub command: Command,
    /// The original client, when the header carries an IPv4 or IPv6 address
    /// (`None` for LOCAL, v1 UNKNOWN, v2 AF_UNSPEC, UNSPEC protocol or AF_UNIX:
    /// the caller then uses the socket's own peer address, as the spec says).
    pub source: Option<SocketAddr>,
    /// The address the client connected to; present exactly when `source` is.
    pub destination: Option<SocketAddr>,
}

/// The outcome of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Valid so far: read until at least this many bytes are buffered (a lower
    /// bound on the header's length, always more than was given), then parse again.
    Incomplete {
        /// Total buffered bytes needed before parsing can make progress.
        need_at_least: usize,
    },
    /// A whole header; the first `consumed` bytes of the buffer were it.
    Complete {
        /// The header.
        header: ProxyHeader,
        /// Its length on the wire.
        consumed: usize,
    },
}

/// What is wrong with a v1 line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Fault {
    /// A CR not followed by LF.
    BareCr,
    /// An LF not preceded by CR.
    BareLf,
    /// A byte that is not printable US-ASCII.
    BadByte,
    /// Not exactly six space-separated fields.
    FieldCount,
    /// The source address is not a canonical address of the family.
    SourceAddress,
    /// The destination address is not a canonical address of the family.
    DestinationAddress,
    /// The source port is not a decimal in 0..=65535 without leading zeroes.
    SourcePort,
    /// The destination port is not a decimal in 0..=65535 without leading zeroes.
    DestinationPort,
    /// An IPv6 address after TCP4, or an IPv4 address after TCP6.
    FamilyMismatch,
}

/// Why bytes are not a PROXY header; every one means: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The stream ended before a whole header (from [`parse_at_eof`] only).
    Truncated {
        /// Bytes received.
        have: usize,
        /// A lower bound on the bytes a header needed.
        need_at_least: usize,
    },
    /// No CRLF within the first [`MAX_V1_LEN`] bytes of a v1 line.
    V1TooLong,
    /// A v2 length field over [`MAX_V2_PAYLOAD`].
    V2TooLong {
        /// The length announced.
        length: usize,
    },
    /// Neither the v2 signature nor "PROXY ".
    WrongSignature,
    /// A v2 version nibble other than 2.
    UnknownVersion(u8),
    /// A v2 command nibble other than LOCAL (0) and PROXY (1).
    UnknownCommand(u8),
    /// A v2 fam/proto byte with an unassigned family or protocol.
    UnknownFamily(u8),
    /// A v1 protocol other than TCP4, TCP6 and UNKNOWN.
    V1UnknownProtocol,
    /// A v2 length too short for the addresses its family announces.
    V2AddressTooShort {
        /// The fam/proto byte.
        family: u8,
        /// The length announced.
        length: usize,
    },
    /// A v1 line that breaks the grammar.
    V1Malformed(V1Fault),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                have,
                need_at_least,
            } => write!(
                f,
                "PROXY header truncated: stream ended after {have} bytes, needs at least {need_at_least}"
            ),
            Self::V1TooLong => write!(f, "PROXY v1 line has no CRLF within {MAX_V1_LEN} bytes"),
            Self::V2TooLong { length } => write!(
                f,
                "PROXY v2 length {length} is over the limit of {MAX_V2_PAYLOAD} bytes"
            ),
            Self::WrongSignature => write!(f, "not a PROXY protocol header (wrong signature)"),
            Self::UnknownVersion(v) => write!(f, "PROXY v2 header with unknown version {v:#x}"),
            Self::UnknownCommand(c) => write!(f, "PROXY v2 header with unknown command {c:#x}"),
            Self::UnknownFamily(b) => {
                write!(f, "PROXY v2 header with unknown family/protocol {b:#04x}")
            }
            Self::V1UnknownProtocol => {
                write!(f, "PROXY v1 line with a protocol other than TCP4, TCP6, UNKNOWN")
            }
            Self::V2AddressTooShort { family, length } => write!(
                f,
                "PROXY v2 length {length} too short for the addresses of family/protocol {family:#04x}"
            ),
            Self::V1Malformed(fault) => {
                let what = match fault {
                    V1Fault::BareCr => "a CR without LF",
                    V1Fault::BareLf => "an LF without CR",
                    V1Fault::BadByte => "a byte that is not printable ASCII",
                    V1Fault::FieldCount => "not six fields",
                    V1Fault::SourceAddress => "a bad source address",
                    V1Fault::DestinationAddress => "a bad destination address",
                    V1Fault::SourcePort => "a bad source port",
                    V1Fault::DestinationPort => "a bad destination port",
                    V1Fault::FamilyMismatch => "an address of the wrong family",
                };
                write!(f, "malformed PROXY v1 line: {what}")
            }
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Parses the header at the start of `buf` (v1 or v2, told apart by the first
/// byte). Bytes after the header are not looked at.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete {
            need_at_least: MIN_V1_LEN,
        });
    }
    if is_prefix_of_either(buf, &V2_SIGNATURE) {
        parse_v2(buf)
    } else if is_prefix_of_either(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyHeaderError::WrongSignature)
    }
}

/// [`parse`] for a stream that has ended: an incomplete header is
/// [`ProxyHeaderError::Truncated`]. Returns the header and its length.
pub fn parse_at_eof(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyHeaderError> {
    match parse(buf)? {
        Parsed::Complete { header, consumed } => Ok((header, consumed)),
        Parsed::Incomplete { need_at_least } => Err(ProxyHeaderError::Truncated {
            have: buf.len(),
            need_at_least,
        }),
    }
}

/// True when the shorter of `buf` and `magic` is a prefix of the other.
fn is_prefix_of_either(buf: &[u8], magic: &[u8]) -> bool {
    let n = buf.len().min(magic.len());
    buf[..n] == magic[..n]
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Ok(Parsed::Incomplete {
            need_at_least: V2_FIXED_LEN,
        });
    };
    let (ver_cmd, fam) = (fixed[12], fixed[13]);
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let version = ver_cmd >> 4;
    if version != V2_VERSION {
        return Err(ProxyHeaderError::UnknownVersion(version));
    }
    let command = match ver_cmd & 0x0f {
        V2_CMD_LOCAL => Command::Local,
        V2_CMD_PROXY => Command::Proxy,
        other => return Err(ProxyHeaderError::UnknownCommand(other)),
    };
    if length > MAX_V2_PAYLOAD {
        return Err(ProxyHeaderError::V2TooLong { length });
    }
    // The spec says LOCAL discards the whole block "including the family
    // which is ignored", so the fam/proto byte is only checked for PROXY.
    let needed = match command {
        Command::Local => 0,
        Command::Proxy => address_len(fam)?,
    };
    if length < needed {
        return Err(ProxyHeaderError::V2AddressTooShort {
            family: fam,
            length,
        });
    }
    let consumed = V2_FIXED_LEN + length;
    let Some(payload) = buf.get(V2_FIXED_LEN..consumed) else {
        return Ok(Parsed::Incomplete {
            need_at_least: consumed,
        });
    };
    // Whatever follows the addresses is TLVs, which we do not use: the length
    // field alone says where the header ends.
    let addrs = match (command, fam >> 4) {
        (Command::Proxy, AF_INET) if needed > 0 => {
            let ip = |at: usize| -> IpAddr {
                Ipv4Addr::new(
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                )
                .into()
            };
            Some((ip(0), ip(4), port(payload, 8), port(payload, 10)))
        }
        (Command::Proxy, AF_INET6) if needed > 0 => {
            let ip = |at: usize| -> IpAddr {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[at..at + 16]);
                Ipv6Addr::from(octets).into()
            };
            Some((ip(0), ip(16), port(payload, 32), port(payload, 34)))
        }
        _ => None,
    };
    Ok(Parsed::Complete {
        header: ProxyHeader {
            version: Version::V2,
            command,
            source: addrs.map(|(s, _, sp, _)| SocketAddr::new(s, sp)),
            destination: addrs.map(|(_, d, _, dp)| SocketAddr::new(d, dp)),
        },
        consumed,
    })
}

/// The address bytes a PROXY command's fam/proto byte needs; 0 for the
/// combinations whose addresses we ignore (UNSPEC, AF_UNIX).
fn address_len(fam: u8) -> Result<usize, ProxyHeaderError> {
    let (family, proto) = (fam >> 4, fam & 0x0f);
    if family > AF_UNIX || proto > PROTO_DGRAM {
        return Err(ProxyHeaderError::UnknownFamily(fam));
    }
    Ok(match (family, proto) {
        (AF_UNSPEC, _) | (_, PROTO_UNSPEC) | (AF_UNIX, _) => 0,
        (AF_INET, PROTO_STREAM | PROTO_DGRAM) => V2_INET_LEN,
        _ => V2_INET6_LEN,
    })
}

fn port(payload: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([payload[at], payload[at + 1]])
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let mut line_end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => {
                if i + 2 > MAX_V1_LEN {
                    return Err(ProxyHeaderError::V1TooLong);
                }
                match buf.get(i + 1) {
                    Some(b'\n') => {
                        line_end = Some(i);
                        break;
                    }
                    Some(_) => return Err(ProxyHeaderError::V1Malformed(V1Fault::BareCr)),
                    None => {
                        return Ok(Parsed::Incomplete {
                            need_at_least: i + 2,
                        })
                    }
                }
            }
            b'\n' => return Err(ProxyHeaderError::V1Malformed(V1Fault::BareLf)),
            0x20..=0x7e => {}
            _ => return Err(ProxyHeaderError::V1Malformed(V1Fault::BadByte)),
        }
    }
    let Some(end) = line_end else {
        if buf.len() >= MAX_V1_LEN {
            return Err(ProxyHeaderError::V1TooLong);
        }
        return Ok(Parsed::Incomplete {
            need_at_least: (buf.len() + 1).max(MIN_V1_LEN),
        });
    };
    // Every byte before `end` was checked to be printable ASCII above.
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyHeaderError::V1Malformed(V1Fault::BadByte))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let v6 = match fields.get(1).copied() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        // The spec: for UNKNOWN the receiver ignores the rest of the line.
        Some("UNKNOWN") => {
            return Ok(complete_v1(None, end + 2));
        }
        _ => return Err(ProxyHeaderError::V1UnknownProtocol),
    };
    let [_, _, src, dst, sport, dport] = fields[..] else {
        return Err(ProxyHeaderError::V1Malformed(V1Fault::FieldCount));
    };
    let src = v1_addr(src, v6, V1Fault::SourceAddress)?;
    let dst = v1_addr(dst, v6, V1Fault::DestinationAddress)?;
    let sport = v1_port(sport, V1Fault::SourcePort)?;
    let dport = v1_port(dport, V1Fault::DestinationPort)?;
    Ok(complete_v1(
        Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
        end + 2,
    ))
}

fn complete_v1(addrs: Option<(SocketAddr, SocketAddr)>, consumed: usize) -> Parsed {
    Parsed::Complete {
        header: ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            source: addrs.map(|(s, _)| s),
            destination: addrs.map(|(_, d)| d),
        },
        consumed,
    }
}

/// std's parsers are strict enough for the spec: IPv4 is four decimals
/// without leading zeroes; IPv6 is colon-hex with at most one `::` (std also
/// takes a dotted IPv4 tail, which haproxy's own inet_pton does too).
fn v1_addr(field: &str, v6: bool, fault: V1Fault) -> Result<IpAddr, ProxyHeaderError> {
    let parsed = if v6 {
        field.parse::<Ipv6Addr>().map(IpAddr::from)
    } else {
        field.parse::<Ipv4Addr>().map(IpAddr::from)
    };
    parsed.map_err(|_| {
        let other_family = if v6 {
            field.parse::<Ipv4Addr>().is_ok()
        } else {
            field.parse::<Ipv6Addr>().is_ok()
        };
        ProxyHeaderError::V1Malformed(if other_family {
            V1Fault::FamilyMismatch
        } else {
            fault
        })
    })
}

/// Decimal digits only: `u16::from_str` would also take a leading `+`, and
/// the spec forbids leading zeroes.
fn v1_port(field: &str, fault: V1Fault) -> Result<u16, ProxyHeaderError> {
    let bad = ProxyHeaderError::V1Malformed(fault);
    if field.is_empty()
        || !field.bytes().all(|b| b.is_ascii_digit())
        || (field.len() > 1 && field.starts_with('0'))
    {
        return Err(bad);
    }
    field.parse().map_err(|_| bad)
}

/// A v1 line: `None` gives "PROXY UNKNOWN"; mixed families are sent as TCP6
/// with the IPv4 address mapped.
pub fn encode_v1(addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let Some((src, dst)) = addrs else {
        return b"PROXY UNKNOWN\r\n".to_vec();
    };
    let line = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("TCP4 {s} {d}"),
        (s, d) => format!("TCP6 {} {}", to_v6(s), to_v6(d)),
    };
    format!("PROXY {line} {} {}\r\n", src.port(), dst.port()).into_bytes()
}

/// A v2 header over TCP with no TLVs; `None` addresses give AF_UNSPEC with an
/// empty block (what a LOCAL health check sends). Mixed families are sent as
/// IPv6 with the IPv4 one mapped.
pub fn encode_v2(command: Command, addrs: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(
        V2_VERSION << 4
            | match command {
                Command::Local => V2_CMD_LOCAL,
                Command::Proxy => V2_CMD_PROXY,
            },
    );
    let mut block = Vec::with_capacity(V2_INET6_LEN);
    let fam = match addrs.map(|(s, d)| (s, d, s.ip(), d.ip())) {
        None => AF_UNSPEC << 4 | PROTO_UNSPEC,
        Some((_, _, IpAddr::V4(s), IpAddr::V4(d))) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            AF_INET << 4 | PROTO_STREAM
        }
        Some((_, _, s, d)) => {
            block.extend_from_slice(&to_v6(s).octets());
            block.extend_from_slice(&to_v6(d).octets());
            AF_INET6 << 4 | PROTO_STREAM
        }
    };
    if let Some((s, d)) = addrs {
        block.extend_from_slice(&s.port().to_be_bytes());
        block.extend_from_slice(&d.port().to_be_bytes());
    }
    out.push(fam);
    // At most 36 bytes: always fits the u16.
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests;
