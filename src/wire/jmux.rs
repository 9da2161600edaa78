//! The JMUX wire format (docs: /work/shared/spec/JMUX.md): messages as data, no I/O.

use std::fmt;

/// Every message starts with type (u8), size (u16, header included) and flags (u8).
pub const HEADER_SIZE: usize = 4;
/// The size field is a u16 and counts the header, so no message is larger.
pub const MAX_MESSAGE_SIZE: usize = 65_535;
/// The most data one DATA message can carry: the largest message minus header and channel id.
pub const MAX_DATA_PAYLOAD: usize = MAX_MESSAGE_SIZE - HEADER_SIZE - 4;
/// The receive window this implementation grants each channel: large enough to
/// keep a loopback link busy, small enough that 4096 stalled channels stay under 1 GiB.
pub const DEFAULT_WINDOW: u32 = 256 * 1024;
/// The largest DATA payload this implementation asks peers to send it.
pub const DEFAULT_MAX_PACKET: u16 = 32 * 1024;
/// The most channels (opening or open) one tunnel keeps at a time.
pub const MAX_CHANNELS: usize = 4096;

/// Type byte of OPEN.
pub const TYPE_OPEN: u8 = 100;
/// Type byte of OPEN_SUCCESS.
pub const TYPE_OPEN_SUCCESS: u8 = 101;
/// Type byte of OPEN_FAILURE.
pub const TYPE_OPEN_FAILURE: u8 = 102;
/// Type byte of WINDOW_ADJUST.
pub const TYPE_WINDOW_ADJUST: u8 = 103;
/// Type byte of DATA.
pub const TYPE_DATA: u8 = 104;
/// Type byte of EOF.
pub const TYPE_EOF: u8 = 105;
/// Type byte of CLOSE.
pub const TYPE_CLOSE: u8 = 106;

/// OPEN_FAILURE reason: general failure.
pub const REASON_GENERAL_FAILURE: u32 = 1;
/// OPEN_FAILURE reason: not allowed by the rule set.
pub const REASON_NOT_ALLOWED: u32 = 2;
/// OPEN_FAILURE reason: network unreachable.
pub const REASON_NETWORK_UNREACHABLE: u32 = 3;
/// OPEN_FAILURE reason: host unreachable.
pub const REASON_HOST_UNREACHABLE: u32 = 4;
/// OPEN_FAILURE reason: connection refused.
pub const REASON_CONNECTION_REFUSED: u32 = 5;
/// OPEN_FAILURE reason: TTL expired (what a connect timeout maps to).
pub const REASON_TTL_EXPIRED: u32 = 6;
/// OPEN_FAILURE reason: address type not supported.
pub const REASON_ADDRESS_TYPE_NOT_SUPPORTED: u32 = 8;

/// The name of a reason code, "other" for codes the spec does not list.
pub fn reason_name(code: u32) -> &'static str {
    match code {
        REASON_GENERAL_FAILURE => "general failure",
        REASON_NOT_ALLOWED => "not allowed by the rule set",
        REASON_NETWORK_UNREACHABLE => "network unreachable",
        REASON_HOST_UNREACHABLE => "host unreachable",
        REASON_CONNECTION_REFUSED => "connection refused",
        REASON_TTL_EXPIRED => "TTL expired",
        REASON_ADDRESS_TYPE_NOT_SUPPORTED => "address type not supported",
        _ => "other",
    }
}

/// One JMUX message. Ids named `recipient_id` are the receiver's own number for the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Asks to open a channel to `destination` (`tcp://HOST:PORT`), numbered `sender_id` by the opener.
    Open {
        /// The opener's id for the new channel.
        sender_id: u32,
        /// How many data bytes the answerer may send before the first WINDOW_ADJUST.
        initial_window: u32,
        /// The largest DATA payload the opener accepts.
        max_packet: u16,
        /// Where to connect, `SCHEME://HOST:PORT`.
        destination: String,
    },
    /// Accepts an OPEN; from now on each side addresses the other by its own id.
    OpenSuccess {
        /// The opener's id, from the OPEN.
        recipient_id: u32,
        /// The answerer's id for the channel.
        sender_id: u32,
        /// How many data bytes the opener may send before the first WINDOW_ADJUST.
        initial_window: u32,
        /// The largest DATA payload the answerer accepts.
        max_packet: u16,
    },
    /// Refuses an OPEN with a reason code (see `REASON_*`) and an optional text.
    OpenFailure {
        /// The opener's id, from the OPEN.
        recipient_id: u32,
        /// Why, as a SOCKS5-style code.
        reason: u32,
        /// Free text for humans; may be empty.
        description: String,
    },
    /// Grants the receiver `increment` more bytes of window on the channel.
    WindowAdjust {
        /// The receiver's id for the channel.
        recipient_id: u32,
        /// Bytes added to the window.
        increment: u32,
    },
    /// Bytes of the channel's stream.
    Data {
        /// The receiver's id for the channel.
        recipient_id: u32,
        /// The bytes, at most [`MAX_DATA_PAYLOAD`].
        data: Vec<u8>,
    },
    /// The sender will send no more data on the channel (half-close).
    Eof {
        /// The receiver's id for the channel.
        recipient_id: u32,
    },
    /// The sender is done with the channel; answered by CLOSE.
    Close {
        /// The receiver's id for the channel.
        recipient_id: u32,
    },
}

impl Message {
    /// The size of the encoded message, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE
            + match self {
                Message::Open { destination, .. } => 10 + destination.len(),
                Message::OpenSuccess { .. } => 14,
                Message::OpenFailure { description, .. } => 8 + description.len(),
                Message::WindowAdjust { .. } => 8,
                Message::Data { data, .. } => 4 + data.len(),
                Message::Eof { .. } | Message::Close { .. } => 4,
            }
    }

    fn type_byte(&self) -> u8 {
        match self {
            Message::Open { .. } => TYPE_OPEN,
            Message::OpenSuccess { .. } => TYPE_OPEN_SUCCESS,
            Message::OpenFailure { .. } => TYPE_OPEN_FAILURE,
            Message::WindowAdjust { .. } => TYPE_WINDOW_ADJUST,
            Message::Data { .. } => TYPE_DATA,
            Message::Eof { .. } => TYPE_EOF,
            Message::Close { .. } => TYPE_CLOSE,
        }
    }
}

/// A message that cannot be encoded: its variable part makes it larger than [`MAX_MESSAGE_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    /// The size the message would have had.
    pub size: usize,
}

impl fmt::Display for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {}-byte JMUX message exceeds the {MAX_MESSAGE_SIZE}-byte limit",
            self.size
        )
    }
}

impl std::error::Error for Oversize {}

/// Appends `message` to `out`; on error `out` is left as it was.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), Oversize> {
    let size = message.encoded_len();
    let Ok(size_field) = u16::try_from(size) else {
        return Err(Oversize { size });
    };
    out.reserve(size);
    out.push(message.type_byte());
    out.extend_from_slice(&size_field.to_be_bytes());
    out.push(0); // flags: reserved, sent as 0
    match message {
        Message::Open {
            sender_id,
            initial_window,
            max_packet,
            destination,
        } => {
            out.extend_from_slice(&sender_id.to_be_bytes());
            out.extend_from_slice(&initial_window.to_be_bytes());
            out.extend_from_slice(&max_packet.to_be_bytes());
            out.extend_from_slice(destination.as_bytes());
        }
        Message::OpenSuccess {
            recipient_id,
            sender_id,
            initial_window,
            max_packet,
        } => {
            out.extend_from_slice(&recipient_id.to_be_bytes());
            out.extend_from_slice(&sender_id.to_be_bytes());
            out.extend_from_slice(&initial_window.to_be_bytes());
            out.extend_from_slice(&max_packet.to_be_bytes());
        }
        Message::OpenFailure {
            recipient_id,
            reason,
            description,
        } => {
            out.extend_from_slice(&recipient_id.to_be_bytes());
            out.extend_from_slice(&reason.to_be_bytes());
            out.extend_from_slice(description.as_bytes());
        }
        Message::WindowAdjust {
            recipient_id,
            increment,
        } => {
            out.extend_from_slice(&recipient_id.to_be_bytes());
            out.extend_from_slice(&increment.to_be_bytes());
        }
        Message::Data { recipient_id, data } => {
            out.extend_from_slice(&recipient_id.to_be_bytes());
            out.extend_from_slice(data);
        }
        Message::Eof { recipient_id } | Message::Close { recipient_id } => {
            out.extend_from_slice(&recipient_id.to_be_bytes());
        }
    }
    Ok(())
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds only the beginning of a message: read more and try again.
    Incomplete,
    /// A whole message, and how many bytes of the buffer it took.
    Complete(Message, usize),
}

/// A malformed message; the spec makes it an error of the whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The type byte is none of 100..=106.
    UnknownType(u8),
    /// The size field is smaller than the header and the type's fixed fields.
    TooShort {
        /// The message type byte.
        kind: u8,
        /// The size field.
        size: u16,
        /// The smallest valid size for that type.
        minimum: usize,
    },
    /// The size field of a fixed-size message is larger than that fixed size.
    Oversize {
        /// The message type byte.
        kind: u8,
        /// The size field.
        size: u16,
        /// The only valid size for that type.
        expected: usize,
    },
    /// The destination URL of an OPEN is not UTF-8.
    DestinationNotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownType(kind) => write!(f, "unknown JMUX message type {kind}"),
            DecodeError::TooShort {
                kind,
                size,
                minimum,
            } => write!(
                f,
                "JMUX message type {kind} has size {size}, below its minimum {minimum}"
            ),
            DecodeError::Oversize {
                kind,
                size,
                expected,
            } => write!(
                f,
                "JMUX message type {kind} has size {size}, but that type is always {expected}"
            ),
            DecodeError::DestinationNotUtf8 => {
                write!(f, "JMUX OPEN destination URL is not UTF-8")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// For each type: the smallest valid size and whether that is also the only one.
fn size_rule(kind: u8) -> Option<(usize, bool)> {
    Some(match kind {
        TYPE_OPEN => (HEADER_SIZE + 10, false),
        TYPE_OPEN_SUCCESS => (HEADER_SIZE + 14, true),
        TYPE_OPEN_FAILURE => (HEADER_SIZE + 8, false),
        TYPE_WINDOW_ADJUST => (HEADER_SIZE + 8, true),
        TYPE_DATA => (HEADER_SIZE + 4, false),
        TYPE_EOF | TYPE_CLOSE => (HEADER_SIZE + 4, true),
        _ => return None,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Strings have no terminator, but the spec lets a sender pad them with NULs.
fn trim_nuls(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

/// Decodes the message at the start of `buf`. Errors are checked as soon as the
/// header is in, so a bad stream is refused without waiting for its body.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    if buf.len() < HEADER_SIZE {
        return Ok(Decoded::Incomplete);
    }
    let kind = buf[0];
    let size_field = u16_at(buf, 1);
    let size = usize::from(size_field);
    let Some((minimum, fixed)) = size_rule(kind) else {
        return Err(DecodeError::UnknownType(kind));
    };
    if size < minimum {
        return Err(DecodeError::TooShort {
            kind,
            size: size_field,
            minimum,
        });
    }
    if fixed && size > minimum {
        return Err(DecodeError::Oversize {
            kind,
            size: size_field,
            expected: minimum,
        });
    }
    if buf.len() < size {
        return Ok(Decoded::Incomplete);
    }
    // The flags byte (buf[3]) is reserved and ignored on receipt.
    let body = &buf[HEADER_SIZE..size];
    let first = u32_at(body, 0);
    let message = match kind {
        TYPE_OPEN => {
            let destination = std::str::from_utf8(trim_nuls(&body[10..]))
                .map_err(|_| DecodeError::DestinationNotUtf8)?;
            Message::Open {
                sender_id: first,
                initial_window: u32_at(body, 4),
                max_packet: u16_at(body, 8),
                destination: destination.to_owned(),
            }
        }
        TYPE_OPEN_SUCCESS => Message::OpenSuccess {
            recipient_id: first,
            sender_id: u32_at(body, 4),
            initial_window: u32_at(body, 8),
            max_packet: u16_at(body, 12),
        },
        // The description is only for humans: a bad byte in it is no reason to
        // end the whole stream, so it is decoded lossily.
        TYPE_OPEN_FAILURE => Message::OpenFailure {
            recipient_id: first,
            reason: u32_at(body, 4),
            description: String::from_utf8_lossy(trim_nuls(&body[8..])).into_owned(),
        },
        TYPE_WINDOW_ADJUST => Message::WindowAdjust {
            recipient_id: first,
            increment: u32_at(body, 4),
        },
        TYPE_DATA => Message::Data {
            recipient_id: first,
            data: body[4..].to_vec(),
        },
        TYPE_EOF => Message::Eof {
            recipient_id: first,
        },
        _ => Message::Close {
            recipient_id: first,
        },
    };
    Ok(Decoded::Complete(message, size))
}

/// A destination URL split into its parts: `SCHEME://HOST:PORT`, IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `tcp` for the deployed client.
    pub scheme: String,
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Destination {
    /// Parses `SCHEME://HOST:PORT`; the error says which part is wrong.
    pub fn parse(url: &str) -> Result<Destination, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("destination {url:?} has no scheme"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("destination {url:?} has no port"))?;
        let host = match host.strip_prefix('[') {
            Some(inside) => inside
                .strip_suffix(']')
                .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(|| format!("destination {url:?} has a bad IPv6 host"))?,
            None if host.contains(':') => {
                return Err(format!("destination {url:?}: IPv6 hosts need brackets"))
            }
            None => host,
        };
        if scheme.is_empty() || host.is_empty() {
            return Err(format!("destination {url:?} has an empty scheme or host"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("destination {url:?} has a bad port"))?;
        Ok(Destination {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests;
