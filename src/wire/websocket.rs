//! WebSocket frame headers (RFC 6455 §5.2) and masking, as data: no I/O.

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;
/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A frame's opcode (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a data message.
    Continuation,
    /// A data frame of UTF-8 text; the relay carries it as bytes.
    Text,
    /// A data frame of bytes.
    Binary,
    /// The end of the sender's stream.
    Close,
    /// Asks for a pong carrying the same payload.
    Ping,
    /// The answer to a ping.
    Pong,
    /// An opcode RFC 6455 reserves: a protocol error without an extension.
    Reserved(u8),
}

impl Opcode {
    fn from_bits(bits: u8) -> Opcode {
        match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
            Opcode::Reserved(bits) => bits & 0xF,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes of payload.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
            || matches!(self, Opcode::Reserved(bits) if bits >= 0x8)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// The three reserved bits (RSV1..3), zero without an extension.
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key; client frames carry one, server frames do not.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

/// Decodes the header at the start of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the header and how many bytes it took.
pub fn decode_header(buf: &[u8]) -> Result<Option<(Header, usize)>, &'static str> {
    let [first, second, rest @ ..] = buf else {
        return Ok(None);
    };
    let (len, mut at) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err("frame length with its most significant bit set");
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let header = Header {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: Opcode::from_bits(first & 0xF),
        mask,
        len,
    };
    Ok(Some((header, at)))
}

/// Encodes the header of a final frame of `len` payload bytes into `out`;
/// returns how many bytes of `out` it used.
pub fn encode_header(
    out: &mut [u8; MAX_HEADER],
    opcode: Opcode,
    len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = 0x80 | opcode.bits();
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut at = match len {
        0..=125 => {
            out[1] = masked | len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = masked | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = masked | 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// XORs `buf` with the mask, starting `offset` bytes into it (masking and
/// unmasking are the same). Works four bytes at a time: this runs over every
/// byte a WebSocket client sends.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let word = u32::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_mask_matches_the_bytewise_definition_at_every_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        for offset in 0..4 {
            for len in [0, 1, 3, 4, 5, 36, 37] {
                let mut fast = data[..len].to_vec();
                apply_mask(&mut fast, mask, offset);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }

    #[track_caller]
    fn check_round_trip(len: usize, mask: Option<[u8; 4]>, header_len: usize) {
        let mut out = [0u8; MAX_HEADER];
        let used = encode_header(&mut out, Opcode::Binary, len, mask);
        assert_eq!(used, header_len);
        let expected = Header {
            fin: true,
            rsv: 0,
            opcode: Opcode::Binary,
            mask,
            len: len as u64,
        };
        assert_eq!(decode_header(&out[..used]), Ok(Some((expected, used))));
        // Every strict prefix asks for more bytes.
        for cut in 0..used {
            assert_eq!(decode_header(&out[..cut]), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn headers_round_trip_at_each_length_form() {
        for mask in [None, Some([1, 2, 3, 4])] {
            let extra = if mask.is_some() { 4 } else { 0 };
            check_round_trip(0, mask, 2 + extra);
            check_round_trip(125, mask, 2 + extra);
            check_round_trip(126, mask, 4 + extra);
            check_round_trip(0xFFFF, mask, 4 + extra);
            check_round_trip(0x1_0000, mask, 10 + extra);
        }
    }

    #[test]
    fn decode_reads_opcode_fin_and_reserved_bits() {
        let (header, used) = decode_header(&[0x79, 0x00]).unwrap().unwrap();
        assert_eq!(used, 2);
        assert!(!header.fin);
        assert_eq!(header.rsv, 0x7);
        assert_eq!(header.opcode, Opcode::Ping);
        assert!(header.opcode.is_control());
        assert!(Opcode::Reserved(0xB).is_control());
        assert!(!Opcode::Reserved(0x3).is_control());
    }

    #[test]
    fn a_length_with_the_top_bit_set_is_refused() {
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert!(decode_header(&frame).is_err());
    }
}
