//! JET association tokens: JWS-signed JWTs (RFC 7515/7519) checked against the authority's public keys.

mod keys;
mod replay;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use uuid::Uuid;

use crate::wire::base64::{self as b64, Alphabet};
pub use keys::{KeyFileError, KeyType, TokenKey, TokenKeys};
use replay::{Refusal, ReplayCache};

/// Longest token accepted, checked before any decoding so work per token is bounded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default clock skew allowed on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default number of (jti, purpose) pairs remembered at once.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Most characters of token-supplied text quoted in a [`TokenError`].
const MAX_ERROR_DETAIL_CHARS: usize = 200;
/// The only `type` claim this verifier takes.
const TOKEN_TYPE: &str = "association";
/// The only connection mode this relay implements: rendezvous.
const CONNECTION_MODE_RENDEZVOUS: &str = "rdv";

/// What a request does with its token; a jti is used once per purpose, so
/// one token can both create an association and then accept on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Creating an association (REST).
    Create,
    /// Gathering candidates for an association (REST).
    Gather,
    /// Reading an association's state (REST).
    Inspect,
    /// Deleting an association (REST).
    Delete,
    /// The server peer's accept.
    Accept,
    /// The client peer's connect.
    Connect,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Create => "create",
            Purpose::Gather => "gather",
            Purpose::Inspect => "inspect",
            Purpose::Delete => "delete",
            Purpose::Accept => "accept",
            Purpose::Connect => "connect",
        })
    }
}

/// The JWS algorithms verified (RFC 7518 section 3.1, RFC 8037 section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256, the signature as R || S.
    Es256,
    /// Ed25519.
    EdDsa,
    /// No signature; accepted only with [`VerifierOptions::allow_unsigned`].
    None,
}

impl Algorithm {
    fn parse(alg: &str) -> Option<Algorithm> {
        match alg {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            "none" => Some(Algorithm::None),
            _ => None,
        }
    }

    /// The key type this algorithm needs, and ring's verifier for it.
    fn key(self) -> Option<(KeyType, &'static dyn VerificationAlgorithm)> {
        match self {
            Algorithm::Rs256 => Some((KeyType::Rsa, &signature::RSA_PKCS1_2048_8192_SHA256)),
            Algorithm::Es256 => Some((KeyType::P256, &signature::ECDSA_P256_SHA256_FIXED)),
            Algorithm::EdDsa => Some((KeyType::Ed25519, &signature::ED25519)),
            Algorithm::None => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::None => "none",
        })
    }
}

/// How tokens are checked besides their keys.
#[derive(Clone, Debug)]
pub struct VerifierOptions {
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Development only: accept `alg: none` tokens, which anyone can write.
    pub allow_unsigned: bool,
    /// Most (jti, purpose) pairs remembered; see [`TokenError::ReplayCacheFull`].
    pub replay_capacity: usize,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            leeway: DEFAULT_LEEWAY,
            allow_unsigned: false,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// The claims of a token that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `jet_aid`: the association, equal to the one the request named.
    pub association: Uuid,
    /// `jet_ap`: the application protocol carried, when the token says.
    pub application_protocol: Option<String>,
    /// `jti`: the token's id.
    pub jti: String,
    /// `exp`, unix seconds.
    pub expires: u64,
    /// `nbf`, unix seconds.
    pub not_before: Option<u64>,
    /// `iat`, unix seconds.
    pub issued_at: Option<u64>,
    /// The algorithm the token was signed with.
    pub algorithm: Algorithm,
    /// The kid of the key that verified it (`None` for an unsigned token).
    pub kid: Option<String>,
}

/// Why a token was refused; the text tells a peer or an operator what to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed JWS/JWT; the text says which part.
    Malformed(String),
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLarge(usize),
    /// `alg: none` without the development flag.
    Unsigned,
    /// An `alg` this verifier does not implement.
    UnsupportedAlgorithm(String),
    /// A `crit` header: extensions this verifier cannot honour (RFC 7515 section 4.1.11).
    CriticalHeader,
    /// No loaded key has the token's `kid`.
    UnknownKid(String),
    /// The keys named by the `kid` are of a type the `alg` cannot use.
    WrongAlgorithm {
        /// The token's `alg`.
        alg: Algorithm,
        /// The token's `kid`.
        kid: String,
        /// The type of the key(s) with that kid.
        key_type: KeyType,
    },
    /// No `kid`, and no loaded key of the type `alg` needs.
    NoKeyForAlgorithm(Algorithm),
    /// No candidate key verifies the signature.
    BadSignature,
    /// `type` is not `association`.
    WrongType(String),
    /// `jet_cm` is not `rdv`.
    UnsupportedConnectionMode(String),
    /// `jet_rec` is true: the relay cannot record.
    RecordingRequested,
    /// `jet_aid` names another association than the request.
    AssociationMismatch {
        /// The token's `jet_aid`.
        token: Uuid,
        /// The association the request names.
        request: Uuid,
    },
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// Now is past `exp` (plus leeway); unix seconds.
    Expired(u64),
    /// Now is before `nbf`/`iat` (less leeway); unix seconds.
    NotYetValid(u64),
    /// This jti was already used for this purpose.
    Replayed(Purpose),
    /// The jti cache is full of live tokens; refused rather than risk a replay.
    ReplayCacheFull(usize),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(what) => write!(f, "malformed token: {what}"),
            TokenError::TooLarge(len) => {
                write!(
                    f,
                    "malformed token: {len} bytes, the limit is {MAX_TOKEN_BYTES}"
                )
            }
            TokenError::Unsigned => f.write_str("unsigned tokens are refused (alg: none)"),
            TokenError::UnsupportedAlgorithm(alg) => {
                write!(
                    f,
                    "token algorithm {alg:?} is not supported (RS256, ES256, EdDSA are)"
                )
            }
            TokenError::CriticalHeader => {
                f.write_str("token has a crit header; no extension is supported")
            }
            TokenError::UnknownKid(kid) => write!(f, "no key matches kid {kid:?}"),
            TokenError::WrongAlgorithm { alg, kid, key_type } => {
                write!(
                    f,
                    "wrong algorithm: kid {kid:?} is an {key_type} key, the token says {alg}"
                )
            }
            TokenError::NoKeyForAlgorithm(alg) => {
                write!(f, "wrong algorithm: no key for {alg} is configured")
            }
            TokenError::BadSignature => f.write_str("signature does not verify"),
            TokenError::WrongType(t) => {
                write!(f, "token type is {t:?}, expected {TOKEN_TYPE:?}")
            }
            TokenError::UnsupportedConnectionMode(cm) => write!(
                f,
                "jet_cm {cm:?} is not supported: this relay only does rendezvous \
                 ({CONNECTION_MODE_RENDEZVOUS:?})"
            ),
            TokenError::RecordingRequested => {
                f.write_str("jet_rec is true but this relay cannot record sessions")
            }
            TokenError::AssociationMismatch { token, request } => {
                write!(f, "jet_aid {token} does not match association {request}")
            }
            TokenError::MissingClaim(name) => write!(f, "token has no {name} claim"),
            TokenError::Expired(exp) => write!(f, "token expired at {}", when(*exp)),
            TokenError::NotYetValid(nbf) => write!(f, "token not valid before {}", when(*nbf)),
            TokenError::Replayed(purpose) => write!(f, "jti already used for {purpose}"),
            TokenError::ReplayCacheFull(cap) => write!(
                f,
                "{cap} unexpired tokens already seen, the most this relay remembers; \
                 retry once some expire"
            ),
        }
    }
}

impl std::error::Error for TokenError {}

/// Unix seconds as RFC 3339 UTC, with the number too, for logs on either side.
fn when(secs: u64) -> String {
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(secs));
    match time {
        // Whole seconds: the log's milliseconds would always read ".000" here.
        Some(t) => format!(
            "{} (unix {secs})",
            crate::log::timestamp(t).replace(".000Z", "Z")
        ),
        None => format!("unix {secs}"),
    }
}

/// The JOSE header fields read; any other is ignored, duplicates refused.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// The claims read. Dates are JSON numbers, possibly fractional (RFC 7519 section 2).
#[derive(Deserialize)]
struct RawClaims {
    #[serde(rename = "type")]
    kind: Option<String>,
    jet_aid: Option<String>,
    jet_cm: Option<String>,
    jet_ap: Option<String>,
    jet_rec: Option<bool>,
    jti: Option<String>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
}

/// Checks association tokens; share one across threads (`&self` everywhere).
pub struct Verifier {
    keys: TokenKeys,
    options: VerifierOptions,
    /// Shared with the verifiers a reload makes from this one, so a token
    /// used before a reload cannot be used again after it.
    replay: Arc<Mutex<ReplayCache>>,
}

impl Verifier {
    /// A verifier for tokens signed by any of `keys`.
    pub fn new(keys: TokenKeys, options: VerifierOptions) -> Verifier {
        let replay = Arc::new(Mutex::new(ReplayCache::new(options.replay_capacity)));
        Verifier {
            keys,
            options,
            replay,
        }
    }

    /// A verifier with new keys and options (a reload) that remembers the
    /// jtis this one has seen.
    pub fn reloaded(&self, keys: TokenKeys, options: VerifierOptions) -> Verifier {
        Verifier {
            keys,
            options,
            replay: Arc::clone(&self.replay),
        }
    }

    /// Checks `token` for a request doing `purpose` on `association` at `now`,
    /// and records its jti for `purpose`. Never panics; work is bounded by
    /// [`MAX_TOKEN_BYTES`] and the number of keys.
    ///
    /// The order: size, shape, header (`alg`, `kid`, `crit`), the signature,
    /// then the claims (type, connection mode, recording, association,
    /// validity) and last the jti, so a token refused for any other reason
    /// does not use up its jti. The claims are parsed only once signed.
    pub fn verify(
        &self,
        token: &str,
        association: Uuid,
        purpose: Purpose,
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            let n = token.split('.').count();
            return Err(malformed(format!(
                "{n} segments, a JWS has 3 separated by '.'"
            )));
        };
        let header: Header = decode_json(header_b64, "header")?;
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let alg = Algorithm::parse(&header.alg)
            .ok_or_else(|| TokenError::UnsupportedAlgorithm(clip(&header.alg)))?;
        let signature = b64::decode(signature_b64.as_bytes(), Alphabet::Url)
            .map_err(|e| malformed(format!("signature: {e}")))?;
        // The signing input is the two first segments as sent (RFC 7515 section 5.2).
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let kid = self.check_signature(alg, header.kid, signed.as_bytes(), &signature)?;
        let raw: RawClaims = decode_json(payload_b64, "claims")?;
        let claims = self.check_claims(raw, alg, kid, association, unix(now))?;
        self.remember(&claims, purpose, unix(now))?;
        Ok(claims)
    }

    /// Verifies the signature; returns the kid of the key that did.
    fn check_signature(
        &self,
        alg: Algorithm,
        kid: Option<String>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<Option<String>, TokenError> {
        let Some((key_type, ring_alg)) = alg.key() else {
            if !self.options.allow_unsigned {
                return Err(TokenError::Unsigned);
            }
            // RFC 7518 section 3.6: an unsecured JWS has an empty signature.
            if !signature.is_empty() {
                return Err(malformed("alg none with a non-empty signature".to_string()));
            }
            return Ok(None);
        };
        let named: Vec<&TokenKey> = match &kid {
            Some(kid) => {
                let named: Vec<&TokenKey> =
                    self.keys.keys.iter().filter(|k| &k.kid == kid).collect();
                if named.is_empty() {
                    return Err(TokenError::UnknownKid(clip(kid)));
                }
                named
            }
            None => self.keys.keys.iter().collect(),
        };
        let candidates: Vec<&TokenKey> = named
            .iter()
            .copied()
            .filter(|k| k.key_type == key_type)
            .collect();
        match (&kid, candidates.is_empty()) {
            (Some(kid), true) => {
                return Err(TokenError::WrongAlgorithm {
                    alg,
                    kid: clip(kid),
                    // `named` is not empty: an empty one returned UnknownKid above.
                    key_type: named[0].key_type,
                });
            }
            (None, true) => return Err(TokenError::NoKeyForAlgorithm(alg)),
            _ => {}
        }
        candidates
            .iter()
            .find(|k| {
                UnparsedPublicKey::new(ring_alg, &k.raw)
                    .verify(signed, signature)
                    .is_ok()
            })
            .map(|k| Some(k.kid.clone()))
            .ok_or(TokenError::BadSignature)
    }

    fn check_claims(
        &self,
        raw: RawClaims,
        algorithm: Algorithm,
        kid: Option<String>,
        association: Uuid,
        now: u64,
    ) -> Result<Claims, TokenError> {
        let kind = raw.kind.ok_or(TokenError::MissingClaim("type"))?;
        if kind != TOKEN_TYPE {
            return Err(TokenError::WrongType(clip(&kind)));
        }
        let cm = raw.jet_cm.ok_or(TokenError::MissingClaim("jet_cm"))?;
        if cm != CONNECTION_MODE_RENDEZVOUS {
            return Err(TokenError::UnsupportedConnectionMode(clip(&cm)));
        }
        if raw.jet_rec == Some(true) {
            return Err(TokenError::RecordingRequested);
        }
        let aid = raw.jet_aid.ok_or(TokenError::MissingClaim("jet_aid"))?;
        let token_aid = Uuid::parse_str(&aid)
            .map_err(|_| malformed(format!("jet_aid {aid:?} is not a UUID")))?;
        if token_aid != association {
            return Err(TokenError::AssociationMismatch {
                token: token_aid,
                request: association,
            });
        }
        let jti = raw.jti.ok_or(TokenError::MissingClaim("jti"))?;
        let expires = numeric_date(raw.exp.ok_or(TokenError::MissingClaim("exp"))?, "exp")?;
        let not_before = raw.nbf.map(|n| numeric_date(n, "nbf")).transpose()?;
        let issued_at = raw.iat.map(|n| numeric_date(n, "iat")).transpose()?;
        let leeway = self.options.leeway.as_secs();
        if now >= expires.saturating_add(leeway) {
            return Err(TokenError::Expired(expires));
        }
        if let Some(start) = not_before.or(issued_at) {
            if now.saturating_add(leeway) < start {
                return Err(TokenError::NotYetValid(start));
            }
        }
        Ok(Claims {
            association: token_aid,
            application_protocol: raw.jet_ap,
            jti,
            expires,
            not_before,
            issued_at,
            algorithm,
            kid,
        })
    }

    /// Records the jti for `purpose` until the token could no longer pass anyway.
    fn remember(&self, claims: &Claims, purpose: Purpose, now: u64) -> Result<(), TokenError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, claims.jti.as_bytes());
        let mut jti = [0u8; 32];
        jti.copy_from_slice(digest.as_ref());
        let forget_after = claims.expires.saturating_add(self.options.leeway.as_secs());
        // A panic elsewhere while holding the lock cannot leave the map half
        // updated in a way that matters here, so a poisoned lock is still used.
        let mut cache = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .insert(jti, purpose, forget_after, now)
            .map_err(|refusal| match refusal {
                Refusal::Replayed => TokenError::Replayed(purpose),
                Refusal::Full => TokenError::ReplayCacheFull(self.options.replay_capacity),
            })
    }
}

fn malformed(what: String) -> TokenError {
    TokenError::Malformed(clip(&what))
}

/// At most [`MAX_ERROR_DETAIL_CHARS`] of a token-supplied text, so an error
/// (and the log line it ends up in) stays short whatever the token holds.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_DETAIL_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str, what: &str) -> Result<T, TokenError> {
    let bytes = b64::decode(segment.as_bytes(), Alphabet::Url)
        .map_err(|e| malformed(format!("{what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("{what}: {e}")))
}

/// A NumericDate as whole unix seconds; fractions are dropped.
fn numeric_date(n: serde_json::Number, name: &str) -> Result<u64, TokenError> {
    if let Some(secs) = n.as_u64() {
        return Ok(secs);
    }
    match n.as_f64() {
        // Below 2^64 so the cast cannot saturate silently.
        Some(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => Ok(f as u64),
        _ => Err(malformed(format!(
            "{name} {n} is not a date (unix seconds)"
        ))),
    }
}

fn unix(now: SystemTime) -> u64 {
    // A clock before 1970 makes every token not yet valid, which is the safe side.
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
