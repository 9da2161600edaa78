//! The signaling messages between peers (draft 0.2 §2.2.3): offer, answer and
//! complete as JSON, and their checks. Pure data: how they travel is `peer::signaling`.

use crate::error::{Error, Result};
use crate::wire::Transport;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol versions the messages may carry ("transports" came with 3).
pub(crate) const VERSIONS: std::ops::RangeInclusive<u8> = 2..=3;

/// Which side of the association a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The peer that tests candidates and selects one.
    Client,
    /// The peer that gathers candidates and accepts on them.
    Server,
}

/// One candidate: an id (unique within the association) and a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Candidate id.
    pub id: Uuid,
    /// Candidate URL (`tcp://HOST:PORT?ctype=relay`).
    pub url: String,
}

/// The client's offer (draft 0.2 §2.2.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Association id, chosen by the client.
    pub id: Uuid,
    /// Always `client`.
    pub role: Role,
    /// Protocol version: 2, or 3 when `transports` is given.
    pub version: u8,
    /// Comma-separated transports the client supports; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<String>,
}

/// The server's answer (draft 0.2 §2.2.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The offer's association id.
    pub id: Uuid,
    /// Always `server`.
    pub role: Role,
    /// Protocol version.
    pub version: u8,
    /// Host and relay candidates for the client to test.
    pub candidates: Vec<Candidate>,
}

/// The client's choice (draft 0.2 §2.2.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    /// The selected candidate.
    pub candidate: CandidateRef,
}

/// A candidate named by id only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRef {
    /// Candidate id.
    pub id: Uuid,
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text.trim()).map_err(|e| Error::Protocol(format!("{what} message: {e}")))
}

fn check_role(what: &str, got: Role, want: Role) -> Result<()> {
    if got != want {
        return Err(Error::Protocol(format!(
            "{what} message: role is {got:?}, expected {want:?}"
        )));
    }
    Ok(())
}

fn check_version(what: &str, version: u8) -> Result<()> {
    if !VERSIONS.contains(&version) {
        return Err(Error::Protocol(format!(
            "{what} message: version {version} is not supported (2 or 3)"
        )));
    }
    Ok(())
}

impl Offer {
    /// Parses and checks an offer line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Offer> {
        let offer: Offer = from_json("offer", text)?;
        check_role("offer", offer.role, Role::Client)?;
        check_version("offer", offer.version)?;
        Ok(offer)
    }

    /// The transports the offer allows; `None` when it does not filter.
    pub fn allowed(&self) -> Option<Vec<Transport>> {
        self.transports.as_deref().map(parse_transports)
    }
}

impl Answer {
    /// Parses and checks an answer line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Answer> {
        let answer: Answer = from_json("answer", text)?;
        check_role("answer", answer.role, Role::Server)?;
        check_version("answer", answer.version)?;
        Ok(answer)
    }
}

impl Complete {
    /// Parses a complete line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Complete> {
        from_json("complete", text)
    }
}

/// Parses a comma-separated transport list; unknown names are left out (a
/// later version may add transports this peer does not know).
pub fn parse_transports(list: &str) -> Vec<Transport> {
    list.split(',')
        .filter_map(|name| Transport::parse(name.trim()))
        .collect()
}

/// True when `scheme` is in `allowed` (`None`: every transport is).
pub(crate) fn allows(allowed: Option<&[Transport]>, scheme: Transport) -> bool {
    allowed.is_none_or(|list| list.contains(&scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4daeb814-cdb6-4779-a16b-6479064e8107";

    #[test]
    fn the_drafts_examples_parse() {
        let offer = Offer::parse(&format!(
            r#"{{"id": "{A}", "role": "client", "transports": "tcp,wss", "version": 2}}"#
        ))
        .unwrap();
        assert_eq!(offer.allowed(), Some(vec![Transport::Tcp, Transport::Wss]));
        let answer = Answer::parse(&format!(
            r#"{{"id": "{A}", "role": "server", "version": 2, "candidates": [
                {{"id": "174a46de-7c56-30e0-e083-b6b03a2df15f", "url": "tcp://10.1.21.34:4489?ctype=host"}},
                {{"id": "b1b4db92-9cc0-49d6-a940-1846fc07cf05", "url": "wss://jet.wayk.net:7171?ctype=relay"}}]}}"#
        ))
        .unwrap();
        assert_eq!(answer.candidates.len(), 2);
        let complete =
            Complete::parse(r#"{"candidate":{"id":"4fab2441-b8a5-4bd5-9831-fe7aa8cccb36"}}"#)
                .unwrap();
        assert_eq!(
            complete.candidate.id.to_string(),
            "4fab2441-b8a5-4bd5-9831-fe7aa8cccb36"
        );
    }

    #[test]
    fn field_names_are_the_drafts() {
        let id = Uuid::parse_str(A).unwrap();
        let offer = Offer {
            id,
            role: Role::Client,
            version: 3,
            transports: Some("tcp".into()),
        };
        assert_eq!(
            serde_json::to_string(&offer).unwrap(),
            format!(r#"{{"id":"{A}","role":"client","version":3,"transports":"tcp"}}"#)
        );
        let bare = Offer {
            transports: None,
            version: 2,
            ..offer
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            format!(r#"{{"id":"{A}","role":"client","version":2}}"#)
        );
        let complete = Complete {
            candidate: CandidateRef { id },
        };
        assert_eq!(
            serde_json::to_string(&complete).unwrap(),
            format!(r#"{{"candidate":{{"id":"{A}"}}}}"#)
        );
    }

    #[test]
    fn unknown_fields_are_tolerated_and_missing_ones_named() {
        let offer = Offer::parse(&format!(
            r#"{{"id":"{A}","role":"client","version":2,"sdp":"x","extra":{{"a":1}}}}"#
        ))
        .unwrap();
        assert_eq!(offer.transports, None);
        let err = Offer::parse(r#"{"role":"client","version":2}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("offer message: missing field `id`"),
            "{err}"
        );
        let err =
            Answer::parse(&format!(r#"{{"id":"{A}","role":"server","version":2}}"#)).unwrap_err();
        assert!(
            err.to_string().contains("missing field `candidates`"),
            "{err}"
        );
        let err = Complete::parse(r#"{"candidate":{}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err =
            Offer::parse(&format!(r#"{{"id":"{A}","role":"server","version":2}}"#)).unwrap_err();
        assert!(err.to_string().contains("role"), "{err}");
        let err =
            Offer::parse(&format!(r#"{{"id":"{A}","role":"client","version":7}}"#)).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
        let err = Offer::parse("not json").unwrap_err();
        assert!(
            err.to_string().starts_with("protocol: offer message:"),
            "{err}"
        );
    }

    #[test]
    fn transport_lists() {
        assert_eq!(
            parse_transports("tcp, WSS,udp,"),
            vec![Transport::Tcp, Transport::Wss]
        );
        assert!(allows(None, Transport::Tls));
        assert!(!allows(Some(&[Transport::Wss]), Transport::Tcp));
    }
}
