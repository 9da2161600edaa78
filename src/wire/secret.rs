//! The REST API key, one type for the relay that checks it and the peer that presents it.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// The shortest key accepted: shorter ones are guessable.
pub(crate) const MIN_API_KEY_LEN: usize = 16;

/// The REST API key. Never printed: `Debug` shows a mask, and no error built
/// here repeats it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Checks a key: at least 16 bytes, no control character
    /// (it travels in an HTTP header line), no space at either end (the relay
    /// trims what it is presented).
    pub fn new(key: &str) -> Result<ApiKey> {
        if let Some(why) = problem(key) {
            return Err(Error::Config(format!("the API key {why}")));
        }
        Ok(ApiKey(key.to_owned()))
    }

    /// Compares with a presented key in time that does not depend on where
    /// they differ (only on the presented length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let key = self.0.as_bytes();
        let mut diff = key.len() ^ presented.len();
        for (i, b) in presented.iter().enumerate() {
            diff |= usize::from(b ^ key.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// The key itself, for the one header that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// What is wrong with a key, in words that do not repeat it.
fn problem(key: &str) -> Option<String> {
    if key.is_empty() {
        Some("is empty".into())
    } else if key.chars().any(char::is_control) || key.trim() != key {
        Some("has a control character or a space at one end".into())
    } else if key.len() < MIN_API_KEY_LEN {
        Some(format!(
            "must be at least {MIN_API_KEY_LEN} characters long"
        ))
    } else {
        None
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ApiKey, D::Error> {
        let text = String::deserialize(d)?;
        match problem(&text) {
            Some(why) => Err(serde::de::Error::custom(format!("api_key {why}"))),
            None => Ok(ApiKey(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_checked_and_never_shown() {
        let key = ApiKey::new("s3cret-key-0123456789").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        for bad in ["", "two\nlines", " padded", "tab\there", "short-key"] {
            let err = ApiKey::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("configuration: the API key"), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }
}
