//! WebSocket frame headers (RFC 6455 §5.2) and masking, as data: no I/O.

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER: usize = 14;
/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Close code: the other end broke the protocol (RFC 6455 §7.4.1).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text message (or a close reason) is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close code: a frame is too big to process (a length with its top bit set,
/// which no endpoint can send: §5.2 keeps that bit zero).
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// A frame a conforming endpoint must reject (RFC 6455 §5, §7): the
/// connection is failed with `code`, its close frame saying `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The close code to send (1002, 1007 or 1009).
    pub code: u16,
    /// A short reason for the close frame (at most 123 bytes, ASCII).
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

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
pub fn decode_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
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
                    // 2^63 and up: no endpoint may send it, and no relay
                    // can read it to its end.
                    return Err(violation(
                        MESSAGE_TOO_BIG,
                        "frame length with its top bit set",
                    ));
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

/// Checks a decoded header against RFC 6455 §5: the mask the sender's role
/// requires (`masked`: a client's frame, read by a server), no reserved bits
/// or opcodes, unfragmented control frames of at most 125 bytes, and
/// continuations only inside a message (`message_open`: a data frame without
/// FIN came before), new data frames only outside one.
pub fn check_header(header: &Header, masked: bool, message_open: bool) -> Result<(), Violation> {
    let error = |reason| Err(violation(PROTOCOL_ERROR, reason));
    match (masked, header.mask.is_some()) {
        (true, false) => return error("unmasked frame from a client"),
        (false, true) => return error("masked frame from a server"),
        _ => {}
    }
    if header.rsv != 0 {
        return error("reserved bits set without an extension");
    }
    match header.opcode {
        Opcode::Reserved(_) => error("reserved opcode"),
        Opcode::Continuation if !message_open => {
            error("continuation frame with no message started")
        }
        Opcode::Text | Opcode::Binary if message_open => {
            error("new data frame inside a fragmented message")
        }
        Opcode::Continuation | Opcode::Text | Opcode::Binary => Ok(()),
        Opcode::Close | Opcode::Ping | Opcode::Pong if !header.fin => {
            error("fragmented control frame")
        }
        Opcode::Close | Opcode::Ping | Opcode::Pong if header.len > MAX_CONTROL_PAYLOAD => {
            error("control frame over 125 bytes")
        }
        Opcode::Close | Opcode::Ping | Opcode::Pong => Ok(()),
    }
}

/// True for a close code an endpoint may send (RFC 6455 §7.4): the defined
/// codes other than those reserved for reports (1005, 1006, 1015), the IANA
/// registered ones up to 1014, and the ranges for libraries (3000-3999) and
/// applications (4000-4999).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close frame's payload (§5.5.1): empty, or a sendable code and
/// a UTF-8 reason.
pub fn check_close_payload(payload: &[u8]) -> Result<(), Violation> {
    match payload {
        [] => Ok(()),
        [_] => Err(violation(PROTOCOL_ERROR, "close payload of one byte")),
        [high, low, reason @ ..] => {
            if !is_sendable_close_code(u16::from_be_bytes([*high, *low])) {
                return Err(violation(PROTOCOL_ERROR, "invalid close code"));
            }
            match std::str::from_utf8(reason) {
                Ok(_) => Ok(()),
                Err(_) => Err(violation(INVALID_PAYLOAD, "close reason not UTF-8")),
            }
        }
    }
}

/// The payload of a close frame failing the connection: `code`, then
/// `reason` (cut to fit the 125 bytes of a control frame).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD as usize - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

/// Validates a text message as UTF-8 piece by piece, as its bytes arrive:
/// a code point may be split across reads and fragments (§5.6, §8.1).
/// The check is std's `from_utf8` over each piece, never a loop per byte here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Stream {
    /// The start of a code point cut at the end of the last piece.
    pending: [u8; 4],
    pending_len: usize,
}

const NOT_UTF8: Violation = violation(INVALID_PAYLOAD, "text not UTF-8");

impl Utf8Stream {
    /// Checks the next piece of the message.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), Violation> {
        // First complete the code point the last piece cut, a byte at a time
        // (at most three bytes).
        while self.pending_len > 0 {
            let Some((&byte, rest)) = piece.split_first() else {
                return Ok(());
            };
            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            piece = rest;
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(NOT_UTF8),
                // Still incomplete: a code point is at most four bytes, and a
                // four-byte prefix is either complete or invalid.
                Err(_) => {}
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(NOT_UTF8),
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Checks that the message did not end inside a code point.
    pub fn finish(&mut self) -> Result<(), Violation> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(NOT_UTF8)
        }
    }
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
    fn a_length_with_the_top_bit_set_is_too_big() {
        for len in [1u64 << 63, u64::MAX] {
            let mut frame = vec![0x82, 127];
            frame.extend_from_slice(&len.to_be_bytes());
            let err = decode_header(&frame).unwrap_err();
            assert_eq!(err.code, MESSAGE_TOO_BIG, "{len}");
        }
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&((1u64 << 63) - 1).to_be_bytes());
        assert!(decode_header(&frame).unwrap().is_some());
    }

    fn header(first: u8, masked: bool, len: u64) -> Header {
        Header {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0x7,
            opcode: Opcode::from_bits(first & 0xF),
            mask: masked.then_some([1, 2, 3, 4]),
            len,
        }
    }

    /// `first` is the FIN/RSV/opcode byte; `open`: a fragmented message is
    /// in progress; `expected`: the close code, or 0 for a valid frame.
    #[track_caller]
    fn check(first: u8, masked: bool, len: u64, open: bool, expected: u16) {
        let got = check_header(&header(first, masked, len), true, open).map_err(|v| v.code);
        let want = if expected == 0 { Ok(()) } else { Err(expected) };
        assert_eq!(
            got, want,
            "{first:#04x} masked={masked} len={len} open={open}"
        );
    }

    #[test]
    fn headers_are_checked_against_section_5() {
        check(0x82, true, 10, false, 0);
        check(0x02, true, 10, false, 0);
        check(0x80, true, 1, true, 0);
        check(0x00, true, 1, true, 0);
        check(0x89, true, 125, true, 0);
        check(0x8A, true, 0, false, 0);
        check(0x88, true, 2, true, 0);
        check(0x82, false, 1, false, PROTOCOL_ERROR);
        check(0x80, true, 1, false, PROTOCOL_ERROR);
        check(0x00, true, 1, false, PROTOCOL_ERROR);
        check(0x81, true, 1, true, PROTOCOL_ERROR);
        check(0x02, true, 1, true, PROTOCOL_ERROR);
        for rsv in [0x10, 0x20, 0x40] {
            check(0x82 | rsv, true, 1, false, PROTOCOL_ERROR);
        }
        for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            check(0x80 | op, true, 0, false, PROTOCOL_ERROR);
        }
        check(0x09, true, 1, false, PROTOCOL_ERROR);
        check(0x08, true, 2, false, PROTOCOL_ERROR);
        check(0x89, true, 126, false, PROTOCOL_ERROR);
        check(0x88, true, 1 << 20, false, PROTOCOL_ERROR);
        // A server's frames arrive unmasked; a masked one is refused.
        let masked_from_server = header(0x82, true, 1);
        assert_eq!(
            check_header(&masked_from_server, false, false).map_err(|v| v.code),
            Err(PROTOCOL_ERROR)
        );
        assert_eq!(check_header(&header(0x82, false, 1), false, false), Ok(()));
    }

    #[track_caller]
    fn check_close(payload: &[u8], expected: u16) {
        let got = check_close_payload(payload).map_err(|v| v.code);
        let want = if expected == 0 { Ok(()) } else { Err(expected) };
        assert_eq!(got, want, "{payload:?}");
    }

    #[test]
    fn close_payloads_need_a_sendable_code_and_a_utf8_reason() {
        check_close(b"", 0);
        check_close(b"\x03", PROTOCOL_ERROR);
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1010, 1011, 1012, 1014, 3000, 3999, 4000, 4999,
        ] {
            check_close(&code.to_be_bytes(), 0);
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            check_close(&code.to_be_bytes(), PROTOCOL_ERROR);
        }
        check_close(b"\x03\xe8fin", 0);
        check_close(b"\x03\xe8\xce\xba\xe1\xbd\xb9", 0);
        check_close(b"\x03\xe8\xff", INVALID_PAYLOAD);
        check_close(b"\x03\xe8ok\xe2\x82", INVALID_PAYLOAD);
    }

    #[test]
    fn close_payloads_we_send_fit_a_control_frame() {
        assert_eq!(close_payload(1002, "bad"), b"\x03\xeabad");
        let long = "é".repeat(100);
        let payload = close_payload(1007, &long);
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD as usize);
        assert_eq!(check_close_payload(&payload), Ok(()));
    }

    /// Feeds `pieces` in order; `valid`: the whole message must pass.
    #[track_caller]
    fn check_utf8(pieces: &[&[u8]], valid: bool) {
        let mut stream = Utf8Stream::default();
        let result = pieces
            .iter()
            .try_for_each(|piece| stream.feed(piece))
            .and_then(|()| stream.finish());
        assert_eq!(result.is_ok(), valid, "{pieces:?}");
        if let Err(v) = result {
            assert_eq!(v.code, INVALID_PAYLOAD);
        }
    }

    #[test]
    fn utf8_is_validated_across_pieces() {
        check_utf8(&[b"hello"], true);
        check_utf8(&[b""], true);
        check_utf8(&[], true);
        check_utf8(&["κόσμε".as_bytes()], true);
        check_utf8(&[b"\xc3", b"\xa9"], true);
        check_utf8(&[b"\xf0", b"\x9f", b"\x98", b"\x80"], true);
        check_utf8(&[b"a\xf0\x9f", b"", b"\x98\x80b"], true);
        check_utf8(&[b"\xe2\x82", b"\xac\xe2", b"\x82\xac"], true);
        check_utf8(&[b"\xff"], false);
        check_utf8(&[b"\x80"], false);
        check_utf8(&[b"\xc0\x80"], false);
        check_utf8(&[b"\xed\xa0\x80"], false);
        check_utf8(&[b"\xf4\x90\x80\x80"], false);
        check_utf8(&[b"\xc3"], false);
        check_utf8(&[b"ok", b"\xe2\x82"], false);
        check_utf8(&[b"\xc3", b"("], false);
        check_utf8(&[b"\xf0\x9f", b"\x98", b"("], false);
        check_utf8(&[b"\xed", b"\xa0\x80"], false);
        // Every split of a valid text passes, every split of a bad one fails.
        let text = "añ€😀z".as_bytes();
        for cut in 0..=text.len() {
            check_utf8(&[&text[..cut], &text[cut..]], true);
        }
        let bad = b"ab\xe2\x28\xa1cd";
        for cut in 0..=bad.len() {
            check_utf8(&[&bad[..cut], &bad[cut..]], false);
        }
    }
}
