//! JET v3 association tokens for (d): a test authority (ES256, EdDSA keys made at start, RS256 from tests/data/jwt/) that signs one token per association and peer ahead of the timed loop.

use crate::peers::test_data;
use jet_relay::wire::base64::Alphabet;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// How long a bench token is valid: tokens are signed just before the round
/// that uses them (2 s by default). The relay remembers each jti until then
/// plus its leeway (set to [`LEEWAY_SECS`]), and refuses tokens once its
/// replay cache (100,000 entries) is full of live ones: at 6,000
/// associations/s, two tokens each, longer lives would fill it.
const TOKEN_LIFETIME_SECS: u64 = 15;
/// The relay's `token_leeway` in the bench: peers and relay share one clock.
const LEEWAY_SECS: u64 = 1;

/// SPKI DER before the 65-byte uncompressed point of a P-256 key (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// SPKI DER before the 32 bytes of an Ed25519 public key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The JWS algorithm the bench's tokens are signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Es256,
    Rs256,
    EdDsa,
}

impl Algorithm {
    pub fn parse(text: &str) -> Result<Algorithm, String> {
        match text.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "rs256" => Ok(Algorithm::Rs256),
            "eddsa" | "ed25519" => Ok(Algorithm::EdDsa),
            other => Err(format!("--tokens: {other:?} is not es256, rs256 or eddsa")),
        }
    }

    /// The `alg` header value, and the tag of the figure's target name.
    pub fn jws_name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

enum Key {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A token authority whose public key the relay under test loads.
pub struct Authority {
    alg: Algorithm,
    key: Key,
    rng: SystemRandom,
    /// Holds `<kid>.pem`, the public key (removed on drop).
    folder: PathBuf,
    kid: String,
}

/// One association's pre-signed tokens: (association, candidate, accept
/// token, connect token), each token with its own jti.
pub struct Signed {
    pub association: Uuid,
    pub candidate: Uuid,
    pub accept: String,
    pub connect: String,
}

fn other<E>(what: &str) -> impl Fn(E) -> io::Error + '_ {
    move |_| io::Error::other(format!("ring: {what}"))
}

impl Authority {
    /// A fresh authority: a new EC or Ed25519 key, or the committed RSA test key.
    pub fn new(alg: Algorithm) -> io::Result<Authority> {
        let rng = SystemRandom::new();
        let folder = std::env::temp_dir().join(format!("jet-bench-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&folder)?;
        let kid = "bench".to_owned();
        let (key, public_der) = match alg {
            Algorithm::Es256 => {
                let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(other("P-256 key"))?;
                let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
                    .map_err(other("P-256 key"))?;
                let der = [&P256_SPKI_PREFIX[..], key.public_key().as_ref()].concat();
                (Key::Es256(key), Some(der))
            }
            Algorithm::EdDsa => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(other("Ed25519 key"))?;
                let key =
                    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(other("Ed25519 key"))?;
                let der = [&ED25519_SPKI_PREFIX[..], key.public_key().as_ref()].concat();
                (Key::EdDsa(key), Some(der))
            }
            Algorithm::Rs256 => {
                let private = PrivateKeyDer::from_pem_file(test_data("jwt/rsa-private.pem"))
                    .map_err(|e| {
                        io::Error::other(format!("tests/data/jwt/rsa-private.pem: {e}"))
                    })?;
                let key = RsaKeyPair::from_pkcs8(private.secret_der())
                    .map_err(|e| io::Error::other(format!("RSA test key: {e}")))?;
                std::fs::copy(test_data("jwt/rsa.pem"), folder.join(format!("{kid}.pem")))?;
                (Key::Rs256(key), None)
            }
        };
        if let Some(der) = public_der {
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                base64(&der, STANDARD, true)
            );
            std::fs::write(folder.join(format!("{kid}.pem")), pem)?;
        }
        Ok(Authority {
            alg,
            key,
            rng,
            folder,
            kid,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The relay configuration lines that make it verify this authority's
    /// tokens and require them on binary JET accept and connect. A JET accept
    /// creates its association as without tokens (`accept_requires_api =
    /// false`), so each association costs two verifications (accept and
    /// connect) and the handshakes are those of the token-less run.
    pub fn relay_config(&self) -> String {
        format!(
            "token_keys = [{:?}]\nrequire_jet_tokens = true\naccept_requires_api = false\ntoken_leeway = {LEEWAY_SECS}\n",
            self.folder.join(format!("{}.pem", self.kid))
        )
    }

    /// A token for `association` with a fresh jti.
    fn token(&self, association: Uuid, now: u64) -> io::Result<String> {
        let header = format!(
            r#"{{"alg":"{}","typ":"JWT","kid":"{}"}}"#,
            self.alg.jws_name(),
            self.kid
        );
        let claims = format!(
            r#"{{"type":"association","jet_aid":"{association}","jet_cm":"rdv","jti":"{}","iat":{now},"nbf":{now},"exp":{}}}"#,
            Uuid::new_v4(),
            now + TOKEN_LIFETIME_SECS
        );
        let input = format!(
            "{}.{}",
            base64(header.as_bytes(), URL, false),
            base64(claims.as_bytes(), URL, false)
        );
        let signature = match &self.key {
            Key::Es256(key) => key
                .sign(&self.rng, input.as_bytes())
                .map_err(other("ES256 signature"))?
                .as_ref()
                .to_vec(),
            Key::EdDsa(key) => key.sign(input.as_bytes()).as_ref().to_vec(),
            Key::Rs256(key) => {
                let mut out = vec![0u8; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut out,
                )
                .map_err(other("RS256 signature"))?;
                out
            }
        };
        Ok(format!("{input}.{}", base64(&signature, URL, false)))
    }

    /// `count` associations' tokens, signed now (before the timed loop).
    pub fn sign_batch(&self, count: usize, id_base: u128, first: u64) -> io::Result<Vec<Signed>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(io::Error::other)?
            .as_secs();
        (0..count as u64)
            .map(|i| {
                let n = u128::from(first + i);
                let association = Uuid::from_u128(id_base | n);
                Ok(Signed {
                    association,
                    candidate: Uuid::from_u128(id_base | n | 1 << 63),
                    accept: self.token(association, now)?,
                    connect: self.token(association, now)?,
                })
            })
            .collect()
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

const STANDARD: Alphabet = Alphabet::Standard;
const URL: Alphabet = Alphabet::Url;

/// Base64 with `alphabet`, padded or not (JWTs: URL-safe, unpadded).
/// Base64 in the library's encoder (`alphabet` is `STANDARD` or `URL`).
fn base64(data: &[u8], alphabet: Alphabet, pad: bool) -> String {
    jet_relay::wire::base64::encode(data, alphabet, pad)
}
