//! Token signing authorities' public keys: PEM files (SPKI or PKCS#1) parsed to what ring verifies.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::wire::base64::{self as b64, Alphabet};

/// Largest key file read; a public key PEM is well under 2 KiB even for RSA-8192.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Most keys held at once: verification may try each key of a type, so this bounds the work.
const MAX_KEYS: usize = 64;
/// Smallest RSA modulus accepted; ring's RS256 verifier refuses smaller ones anyway.
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, the most ring's verifier takes.
const MAX_RSA_BITS: usize = 8192;

/// rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017 appendix C), as DER content bytes.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey, 1.2.840.10045.2.1 (RFC 5480 section 2.1.1).
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1 / P-256, 1.2.840.10045.3.1.7 (RFC 5480 section 2.1.1.1).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// id-Ed25519, 1.3.101.112 (RFC 8410 section 3).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// The type of a public key, which fixes the one JWS algorithm it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, for RS256.
    Rsa,
    /// ECDSA on P-256, for ES256.
    P256,
    /// Ed25519, for EdDSA.
    Ed25519,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "EC P-256",
            KeyType::Ed25519 => "Ed25519",
        })
    }
}

/// One public key: its id, its type and the bytes ring's verifier takes.
#[derive(Clone, Debug)]
pub struct TokenKey {
    /// The key id a token's `kid` header names: the file name without its
    /// extension (`keys/2026-12.pem` is `2026-12`), so rotating means adding a
    /// file named after the new kid.
    pub kid: String,
    /// The key's type.
    pub key_type: KeyType,
    /// PKCS#1 RSAPublicKey DER for RSA, the uncompressed point for P-256, 32 raw bytes for Ed25519.
    pub(crate) raw: Vec<u8>,
}

/// The keys tokens may be signed with, several at once for rotation. Reload
/// by building a new one and swapping the verifier.
#[derive(Clone, Debug, Default)]
pub struct TokenKeys {
    pub(crate) keys: Vec<TokenKey>,
}

/// A key file that could not be used: which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, for an operator.
    pub reason: String,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token key file {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for KeyFileError {}

impl TokenKeys {
    /// Reads every file; each holds one or more `PUBLIC KEY` (SPKI) or
    /// `RSA PUBLIC KEY` (PKCS#1) PEM blocks. Keys of one file share its kid.
    pub fn load(paths: &[PathBuf]) -> Result<TokenKeys, KeyFileError> {
        let mut keys = TokenKeys::default();
        for path in paths {
            let fail = |reason: String| KeyFileError {
                path: path.clone(),
                reason,
            };
            let text = read_bounded(path).map_err(fail)?;
            keys.add_pem(&kid_of(path), &text).map_err(fail)?;
        }
        Ok(keys)
    }

    /// Adds the keys of one PEM text under `kid`; the error says what is wrong.
    pub fn add_pem(&mut self, kid: &str, pem: &str) -> Result<(), String> {
        let blocks = pem_blocks(pem)?;
        if blocks.is_empty() {
            return Err("no PEM block (expected -----BEGIN PUBLIC KEY-----)".to_string());
        }
        if self.keys.len() + blocks.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} token keys in all"));
        }
        for (n, (label, der)) in blocks.iter().enumerate() {
            let block = n + 1;
            let (key_type, raw) = match label.as_str() {
                "PUBLIC KEY" => parse_spki(der),
                "RSA PUBLIC KEY" => parse_rsa_public_key(der).map(|raw| (KeyType::Rsa, raw)),
                other => Err(format!(
                    "a {other} block; expected PUBLIC KEY or RSA PUBLIC KEY \
                     (a public key, never the private one)"
                )),
            }
            .map_err(|e| format!("PEM block {block}: {e}"))?;
            self.keys.push(TokenKey {
                kid: kid.to_string(),
                key_type,
                raw,
            });
        }
        Ok(())
    }

    /// The loaded keys.
    pub fn keys(&self) -> &[TokenKey] {
        &self.keys
    }

    /// True when no key is loaded: only unsigned tokens (if allowed) could pass.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The kid of a key file: its name without the last extension.
fn kid_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "larger than {MAX_KEY_FILE_BYTES} bytes; not a public key"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not text (expected PEM)".to_string())
}

/// The (label, DER) of each PEM block (RFC 7468); text between blocks is ignored.
pub(super) fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.contains(':') {
                return Err(format!("{label} block has headers (an encrypted key?)"));
            }
            body.push_str(line);
        }
        if !closed {
            return Err(format!("{label} block has no {end} line"));
        }
        // PEM pads to a multiple of four; the decoder takes unpadded text.
        let unpadded = body
            .strip_suffix("==")
            .or_else(|| body.strip_suffix('='))
            .unwrap_or(&body);
        if body.len() % 4 != 0 {
            return Err(format!(
                "{label} block: base64 length is not a multiple of 4"
            ));
        }
        let der = b64::decode(unpadded.as_bytes(), Alphabet::Standard)
            .map_err(|e| format!("{label} block: bad base64: {e}"))?;
        blocks.push((label.to_string(), der));
    }
    Ok(blocks)
}

/// A reader over DER bytes: single-byte tags, definite minimal lengths.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The content of the next element, which must have `tag`.
    fn read(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let bad = |why: &str| format!("bad DER in {what}: {why}");
        let (&got, rest) = self.0.split_first().ok_or_else(|| bad("truncated"))?;
        if got != tag {
            return Err(bad(&format!("tag 0x{got:02x}, expected 0x{tag:02x}")));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form: 1 or 2 length bytes is ample for a key of a few KiB.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 2 || rest.len() < n {
                return Err(bad("unsupported length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            rest = &rest[n..];
            if len < 0x80 || (n == 2 && len < 0x100) {
                return Err(bad("length not minimally encoded"));
            }
            len
        };
        if rest.len() < len {
            return Err(bad("truncated"));
        }
        let (content, after) = rest.split_at(len);
        self.0 = after;
        Ok(content)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn finish(&self, what: &str) -> Result<(), String> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(format!("bad DER in {what}: trailing bytes"))
        }
    }
}

/// SubjectPublicKeyInfo (RFC 5280 section 4.1): the algorithm says the key type.
fn parse_spki(der: &[u8]) -> Result<(KeyType, Vec<u8>), String> {
    let mut outer = Der(der);
    let mut spki = Der(outer.read(TAG_SEQUENCE, "SubjectPublicKeyInfo")?);
    outer.finish("SubjectPublicKeyInfo")?;
    let mut alg = Der(spki.read(TAG_SEQUENCE, "AlgorithmIdentifier")?);
    let bits = spki.read(TAG_BIT_STRING, "subjectPublicKey")?;
    spki.finish("SubjectPublicKeyInfo")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("subjectPublicKey is not a whole number of bytes".to_string()),
    };
    let oid = alg.read(TAG_OID, "algorithm")?;
    if oid == OID_RSA {
        // RFC 8017 says the parameters are NULL; some writers omit them.
        if !alg.is_empty() {
            alg.read(TAG_NULL, "RSA parameters")?;
        }
        alg.finish("AlgorithmIdentifier")?;
        Ok((KeyType::Rsa, parse_rsa_public_key(key)?))
    } else if oid == OID_EC {
        let curve = alg.read(TAG_OID, "EC curve")?;
        alg.finish("AlgorithmIdentifier")?;
        if curve != OID_P256 {
            return Err("EC key on a curve other than P-256 (only ES256 is supported)".to_string());
        }
        // RFC 5480 section 2.2: 0x04 then X and Y, 32 bytes each.
        if key.len() != 65 || key[0] != 0x04 {
            return Err("EC P-256 key is not an uncompressed point".to_string());
        }
        Ok((KeyType::P256, key.to_vec()))
    } else if oid == OID_ED25519 {
        // RFC 8410 section 3: the parameters MUST be absent.
        alg.finish("AlgorithmIdentifier")?;
        if key.len() != 32 {
            return Err(format!("Ed25519 key is {} bytes, expected 32", key.len()));
        }
        Ok((KeyType::Ed25519, key.to_vec()))
    } else {
        Err("key algorithm is not RSA, EC P-256 or Ed25519".to_string())
    }
}

/// Checks a PKCS#1 RSAPublicKey (RFC 8017 appendix A.1.1) and its size; returns it whole.
fn parse_rsa_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let mut outer = Der(der);
    let mut seq = Der(outer.read(TAG_SEQUENCE, "RSAPublicKey")?);
    outer.finish("RSAPublicKey")?;
    let modulus = seq.read(TAG_INTEGER, "RSA modulus")?;
    seq.read(TAG_INTEGER, "RSA exponent")?;
    seq.finish("RSAPublicKey")?;
    let significant = match modulus.iter().position(|&b| b != 0) {
        Some(at) => &modulus[at..],
        None => return Err("RSA modulus is zero".to_string()),
    };
    let bits = significant.len() * 8 - significant[0].leading_zeros() as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA key is {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
        ));
    }
    Ok(der.to_vec())
}
