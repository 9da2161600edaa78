//! Base64 (RFC 4648): strict decoding (base64url without padding for JWS,
//! standard for PEM) and encoding, with or without padding.

/// The two alphabets of RFC 4648: `+/` (section 4) and `-_` (section 5).
#[derive(Clone, Copy)]
pub enum Alphabet {
    /// Standard base64, used inside PEM armour.
    Standard,
    /// URL- and filename-safe base64, used by JWS compact serialization.
    Url,
}

/// Decodes unpadded base64 in `alphabet`, refusing anything that is not the
/// one canonical encoding of its bytes: padding, whitespace, characters of the
/// other alphabet, a length that no byte string encodes (4n+1), and non-zero
/// bits left over in the last character. RFC 7515 section 2 requires
/// base64url without padding; refusing the non-canonical forms means a token
/// has exactly one spelling, so a jti replay cannot hide behind a variant.
pub fn decode(input: &[u8], alphabet: Alphabet) -> Result<Vec<u8>, String> {
    if input.len() % 4 == 1 {
        return Err(format!("{} characters is not a base64 length", input.len()));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (at, &c) in input.iter().enumerate() {
        let v = value(c, alphabet).ok_or_else(|| {
            if c == b'=' {
                "padding is not allowed".to_string()
            } else {
                format!("byte 0x{c:02x} at offset {at} is not base64")
            }
        })?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Truncation keeps the 8 bits just completed; the higher ones were
            // emitted already.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 2 or 4 bits remain after 2 or 3 characters of a final group: they must
    // be zero, or another string decodes to the same bytes.
    if acc != 0 {
        return Err("non-zero trailing bits (not the canonical encoding)".to_string());
    }
    Ok(out)
}

/// The 6-bit value of one character, or `None` for a byte outside `alphabet`.
fn value(c: u8, alphabet: Alphabet) -> Option<u8> {
    match (c, alphabet) {
        (b'A'..=b'Z', _) => Some(c - b'A'),
        (b'a'..=b'z', _) => Some(c - b'a' + 26),
        (b'0'..=b'9', _) => Some(c - b'0' + 52),
        (b'+', Alphabet::Standard) | (b'-', Alphabet::Url) => Some(62),
        (b'/', Alphabet::Standard) | (b'_', Alphabet::Url) => Some(63),
        _ => None,
    }
}

/// Encodes bytes in `alphabet`, with `=` padding to a multiple of 4 when
/// `padded` (HTTP Basic credentials, PEM) or without (JWS).
pub fn encode(input: &[u8], alphabet: Alphabet, padded: bool) -> String {
    const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let table = match alphabet {
        Alphabet::Standard => STANDARD,
        Alphabet::Url => URL,
    };
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if padded {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_b64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..40 {
            let text = encode(&data[..len], Alphabet::Url, false);
            assert_eq!(
                decode(text.as_bytes(), Alphabet::Url).as_deref(),
                Ok(&data[..len])
            );
        }
        assert_eq!(encode(b"\xfb\xff", Alphabet::Url, false), "-_8");
        assert_eq!(encode(b"\xfb\xff", Alphabet::Standard, false), "+/8");
    }

    #[test]
    fn token_b64_refuses_padding_bad_chars_bad_length_and_trailing_bits() {
        assert!(decode(b"QQ==", Alphabet::Url)
            .unwrap_err()
            .contains("padding"));
        assert!(
            decode(b"+/8", Alphabet::Url).is_err(),
            "standard chars in base64url"
        );
        assert!(
            decode(b"-_8", Alphabet::Standard).is_err(),
            "url chars in standard"
        );
        assert!(decode(b"QUJD\nQQ", Alphabet::Url).is_err(), "whitespace");
        assert!(decode(b"QUJDR", Alphabet::Url)
            .unwrap_err()
            .contains("length"));
        // "QQ" is the canonical "A"; "QR" differs only in the discarded bits.
        assert_eq!(decode(b"QQ", Alphabet::Url), Ok(b"A".to_vec()));
        assert!(decode(b"QR", Alphabet::Url)
            .unwrap_err()
            .contains("trailing"));
    }
}
