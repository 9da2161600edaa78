//! The JET_PACKET codec: an 8-byte header (`JET\0`, size, flags, mask) and a masked payload.

use std::io::{self, Read};

/// The four bytes every JET packet starts with: "JET" and a zero.
pub const SIGNATURE: [u8; 4] = *b"JET\0";
/// Length of the fixed header: signature (4), size (2), flags (1), mask (1).
pub const HEADER_LEN: usize = 8;
/// The largest packet the 16-bit size field can describe, header included.
pub const MAX_PACKET: usize = u16::MAX as usize;
/// The mask deployed peers and relays write (draft 0.2 leaves the value free).
pub const WRITE_MASK: u8 = 0x73;

/// Why a byte sequence is not a JET packet. The relay closes such a connection
/// without an answer: it cannot know the peer speaks JET at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// The first four bytes are not `JET\0`.
    BadSignature([u8; 4]),
    /// The size field is below the 8-byte header it must include.
    TooSmall(u16),
    /// A payload to encode does not fit the 16-bit size field (its length
    /// in bytes); a sender must not write such a packet.
    TooLarge(usize),
}

impl std::error::Error for PacketError {}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::BadSignature(sig) => write!(f, "bad signature {sig:02x?}"),
            PacketError::TooSmall(size) => write!(f, "packet size {size} is below the header size"),
            PacketError::TooLarge(len) => write!(
                f,
                "a payload of {len} bytes does not fit a JET packet (at most {} bytes)",
                MAX_PACKET - HEADER_LEN
            ),
        }
    }
}

/// A decoded packet: the payload is already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The reserved flags byte as received (written as 0, ignored on read).
    pub flags: u8,
    /// The mask the sender used.
    pub mask: u8,
    /// The unmasked payload: an HTTP/1.1 request or response head.
    pub payload: Vec<u8>,
}

/// Checks a header and returns the payload length it announces.
pub fn payload_len(header: &[u8; HEADER_LEN]) -> Result<usize, PacketError> {
    let mut sig = [0; 4];
    sig.copy_from_slice(&header[..4]);
    if sig != SIGNATURE {
        return Err(PacketError::BadSignature(sig));
    }
    let size = u16::from_be_bytes([header[4], header[5]]);
    if usize::from(size) < HEADER_LEN {
        return Err(PacketError::TooSmall(size));
    }
    Ok(usize::from(size) - HEADER_LEN)
}

/// Reads the rest of a packet whose header was already read, consuming exactly
/// the announced size: whatever follows stays in the stream for the relay.
pub fn read_body(header: &[u8; HEADER_LEN], mut stream: impl Read) -> io::Result<Packet> {
    let len = payload_len(header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    let mask = header[7];
    unmask(&mut payload, mask);
    Ok(Packet {
        flags: header[6],
        mask,
        payload,
    })
}

/// Reads one whole packet, header first, and nothing after it.
pub fn read_packet(mut stream: impl Read) -> io::Result<Packet> {
    let mut header = [0; HEADER_LEN];
    stream.read_exact(&mut header)?;
    read_body(&header, stream)
}

/// Encodes a payload as one packet with flags 0 and the given mask; a payload
/// that does not fit the 16-bit size field is an error, not a panic (a head
/// may carry configured text, such as the relay's instance name).
pub fn encode(payload: &[u8], mask: u8) -> Result<Vec<u8>, PacketError> {
    let size = u16::try_from(payload.len() + HEADER_LEN)
        .map_err(|_| PacketError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(usize::from(size));
    out.extend_from_slice(&SIGNATURE);
    out.extend_from_slice(&size.to_be_bytes());
    out.push(0);
    out.push(mask);
    out.extend(payload.iter().map(|b| b ^ mask));
    Ok(out)
}

/// Unmasks (or masks: XOR is its own inverse) a payload in place.
pub fn unmask(payload: &mut [u8], mask: u8) {
    if mask != 0 {
        payload.iter_mut().for_each(|b| *b ^= mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_round_trips_with_any_mask() {
        for mask in [0x00, 0x73, 0xff] {
            let bytes = encode(b"GET / HTTP/1.1\r\n\r\n", mask).unwrap();
            assert_eq!(&bytes[..4], b"JET\0");
            assert_eq!(
                u16::from_be_bytes([bytes[4], bytes[5]]) as usize,
                bytes.len()
            );
            assert_eq!(bytes[6], 0);
            assert_eq!(bytes[7], mask);
            let packet = read_packet(&bytes[..]).unwrap();
            assert_eq!(packet.payload, b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(packet.mask, mask);
        }
    }

    #[test]
    fn a_payload_too_large_for_the_size_field_is_an_error_not_a_panic() {
        let largest = vec![b'x'; MAX_PACKET - HEADER_LEN];
        assert_eq!(encode(&largest, 0x73).unwrap().len(), MAX_PACKET);
        let one_more = vec![b'x'; MAX_PACKET - HEADER_LEN + 1];
        assert_eq!(
            encode(&one_more, 0x73),
            Err(PacketError::TooLarge(MAX_PACKET - HEADER_LEN + 1))
        );
    }

    #[test]
    fn flags_are_ignored_on_read() {
        let mut bytes = encode(b"x", 0x73).unwrap();
        bytes[6] = 0x5a;
        let packet = read_packet(&bytes[..]).unwrap();
        assert_eq!(packet.flags, 0x5a);
        assert_eq!(packet.payload, b"x");
    }

    #[test]
    fn reads_exactly_the_announced_size() {
        let mut bytes = encode(b"head", 0x73).unwrap();
        bytes.extend_from_slice(b"relayed");
        let mut rest = &bytes[..];
        let packet = read_packet(&mut rest).unwrap();
        assert_eq!(packet.payload, b"head");
        assert_eq!(rest, b"relayed");
    }

    #[test]
    fn rejects_bad_signature_and_short_size() {
        assert_eq!(
            payload_len(b"GET / HT"),
            Err(PacketError::BadSignature(*b"GET "))
        );
        assert_eq!(
            payload_len(&[b'J', b'E', b'T', 0, 0, 7, 0, 0]),
            Err(PacketError::TooSmall(7))
        );
        assert_eq!(payload_len(&[b'J', b'E', b'T', 0, 0, 8, 0, 0]), Ok(0));
        assert_eq!(
            payload_len(&[b'J', b'E', b'T', 0, 0xff, 0xff, 0, 0]),
            Ok(MAX_PACKET - HEADER_LEN)
        );
    }

    #[test]
    fn truncated_packet_is_an_eof_error() {
        let bytes = encode(b"GET / HTTP/1.1\r\n\r\n", 0x73).unwrap();
        let err = read_packet(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
