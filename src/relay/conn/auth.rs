//! Who is asking and what they may do: the API key, association tokens (JET v3), and the policy per endpoint.

use crate::relay::conn::http::Response;
use crate::relay::shared::Context;
use crate::relay::token::{Purpose, TokenError};
use crate::wire::http::header;
use crate::wire::message::{self, Command, Method};
use std::time::SystemTime;
use uuid::Uuid;

/// The credential a request presents, before it is checked against a route.
#[derive(Debug)]
pub enum Credential<'a> {
    /// The configured API key: the administrator, allowed everything.
    Admin,
    /// A bearer value that is not the API key: an association token, or a
    /// wrong key.
    Bearer(&'a str),
    /// Nothing presented.
    None,
}

/// Who a request was let in as.
#[derive(Debug)]
pub enum Caller {
    /// The holder of the API key.
    Admin,
    /// The holder of a valid token for the association the request names.
    Token,
    /// No credential, on a route open to anyone.
    Anonymous,
}

/// What a REST request does, with the association it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /metrics`: counters only, no id.
    Metrics,
    /// `GET /jet/association`: every association with its candidates.
    List,
    /// `POST /jet/association/<id>`.
    Create(Uuid),
    /// `POST /jet/gather/<id>`.
    Gather(Uuid),
    /// `GET /jet/association/<id>`: its candidates' ids and states.
    Inspect(Uuid),
    /// `DELETE /jet/association/<id>`.
    Delete(Uuid),
}

impl Action {
    /// The association and token purpose, for the actions a token may grant.
    fn token_scope(self) -> Option<(Uuid, Purpose)> {
        match self {
            Action::Metrics | Action::List => None,
            Action::Create(id) => Some((id, Purpose::Create)),
            Action::Gather(id) => Some((id, Purpose::Gather)),
            Action::Inspect(id) => Some((id, Purpose::Inspect)),
            Action::Delete(id) => Some((id, Purpose::Delete)),
        }
    }
}

/// The value of an `Authorization: Bearer <value>` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|v| !v.is_empty())
}

/// Reads the credential of a REST request; the API key is compared in
/// constant time.
pub fn credential<'a>(ctx: &Context, authorization: Option<&'a str>) -> Credential<'a> {
    match bearer(authorization) {
        None => Credential::None,
        Some(value) if is_api_key(ctx, value) => Credential::Admin,
        Some(value) => Credential::Bearer(value),
    }
}

fn is_api_key(ctx: &Context, value: &str) -> bool {
    ctx.config()
        .api_key
        .as_ref()
        .is_some_and(|key| key.matches(value.as_bytes()))
}

/// A JWS in compact form has exactly two dots; an API key has none in practice.
/// Only shape: whether it verifies is the verifier's business.
fn looks_like_token(value: &str) -> bool {
    value.bytes().filter(|&b| b == b'.').count() == 2
}

/// The refusal every route but `/health` gets on a relay with an API key
/// when the request carries neither that key nor something to check as a
/// token: as before tokens existed, 401 whatever the route.
pub fn refuse_early(ctx: &Context, credential: &Credential<'_>) -> Option<Response> {
    ctx.config().api_key.as_ref()?;
    let tokens = ctx.config().tokens_configured();
    match credential {
        Credential::Admin => None,
        Credential::Bearer(value) if tokens && looks_like_token(value) => None,
        Credential::Bearer(_) => Some(unauthorized("wrong API key")),
        Credential::None if tokens => Some(unauthorized(
            "an API key or an association token is required",
        )),
        Credential::None => Some(unauthorized("an API key is required")),
    }
}

/// Decides whether `credential` may do `action`: the administrator may do
/// everything; a token, what it grants on its own association; an anonymous
/// caller, only what names no association it did not name itself.
pub fn allow(
    ctx: &Context,
    credential: &Credential<'_>,
    action: Action,
) -> Result<Caller, Response> {
    if let Credential::Admin = credential {
        return Ok(Caller::Admin);
    }
    if let (Credential::Bearer(token), Some(verifier)) = (credential, ctx.verifier()) {
        if looks_like_token(token) {
            let Some((association, purpose)) = action.token_scope() else {
                return Err(insufficient_scope(
                    "an association token grants access to its own association only; \
                     this endpoint needs the api_key",
                ));
            };
            return match verifier.verify(token, association, purpose, SystemTime::now()) {
                Ok(_) => Ok(Caller::Token),
                Err(e) => Err(token_refusal(&e)),
            };
        }
    }
    // Reached only without an API key (`refuse_early` answered otherwise),
    // with no credential or a bearer value nothing here can check.
    match action {
        Action::Metrics => Ok(Caller::Anonymous),
        Action::List | Action::Inspect(_) | Action::Delete(_) => Err(Response::error(
            403,
            &format!(
                "{} is refused without credentials: it would show or change associations \
                 the caller did not name itself. Set api_key in relay.toml to enable it{}",
                action_name(action),
                if ctx.config().tokens_configured() {
                    " (an association token may also inspect or delete its own association)"
                } else {
                    ""
                }
            ),
        )),
        Action::Create(_) | Action::Gather(_) if ctx.config().tokens_configured() => Err(
            unauthorized("an association token for this association is required"),
        ),
        Action::Create(_) | Action::Gather(_) => Ok(Caller::Anonymous),
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Metrics => "GET /metrics",
        Action::List => "listing associations (GET /jet/association)",
        Action::Create(_) => "creating an association",
        Action::Gather(_) => "gathering candidates",
        Action::Inspect(_) => "inspecting an association (GET /jet/association/<id>)",
        Action::Delete(_) => "deleting an association (DELETE /jet/association/<id>)",
    }
}

/// Checks the token of a WebSocket upgrade once its path is known. With
/// tokens configured, accept and connect need one for their association
/// (`Authorization: Bearer`, or `?token=` since browsers cannot set headers);
/// the API key passes too. Tests need none: they only say whether the named
/// association exists. Without tokens configured, upgrades pass as before.
pub fn check_upgrade(
    ctx: &Context,
    head: &[u8],
    method: Method,
    association: Uuid,
) -> Result<(), Response> {
    let Some(verifier) = ctx.verifier() else {
        return Ok(());
    };
    let Some(purpose) = purpose_of(method) else {
        return Ok(());
    };
    let mut headers = [httparse::EMPTY_HEADER; crate::relay::conn::http::MAX_UPGRADE_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // The upgrade parser accepted this head already; a failure here leaves no token.
    let _ = req.parse(head);
    let authorization = header(&*req.headers, "Authorization");
    let presented = bearer(authorization).or_else(|| query_param(req.path?, "token"));
    let Some(token) = presented else {
        return Err(unauthorized(
            "an association token is required (Authorization: Bearer, or ?token=)",
        ));
    };
    if is_api_key(ctx, token) {
        return Ok(());
    }
    verifier
        .verify(token, association, purpose, SystemTime::now())
        .map(drop)
        .map_err(|e| token_refusal(&e))
}

/// Checks the token in a binary JET request's head (`Authorization: Bearer`).
/// Deployed JET v3 clients carry none in the packet (the specification only
/// says tokens "can be embedded in Jet messages"; the association is
/// authorized when it is created through the REST API), so one is checked
/// when present and required only with `require_jet_tokens`. The error is
/// the status and the reason for the log.
pub fn check_jet(
    ctx: &Context,
    payload: &[u8],
    request: &message::Request,
) -> Result<(), (u16, String)> {
    let Some(verifier) = ctx.verifier() else {
        return Ok(());
    };
    let mut headers = [httparse::EMPTY_HEADER; message::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // `parse_request` accepted this head already.
    let _ = req.parse(payload);
    let presented = bearer(header(&*req.headers, "Authorization"));
    let required = ctx.config().require_jet_tokens;
    let (association, purpose) = match request.command {
        Command::AcceptNew if required => {
            return Err((
                401,
                "a version 1 accept names no association a token could grant; \
                 use /jet/accept/<association>/<candidate>"
                    .into(),
            ))
        }
        Command::AcceptNew | Command::Test { .. } => return Ok(()),
        Command::Accept { association, .. } => (association, Purpose::Accept),
        Command::Connect { association, .. } => (association, Purpose::Connect),
    };
    match presented {
        None if required => Err((401, "an association token is required".into())),
        None => Ok(()),
        Some(token) if is_api_key(ctx, token) => Ok(()),
        Some(token) => verifier
            .verify(token, association, purpose, SystemTime::now())
            .map(drop)
            .map_err(|e| (token_status(&e), format!("token refused: {e}"))),
    }
}

fn purpose_of(method: Method) -> Option<Purpose> {
    match method {
        Method::Accept => Some(Purpose::Accept),
        Method::Connect => Some(Purpose::Connect),
        Method::Test => None,
    }
}

/// 403 for a valid token of another association (RFC 6750's insufficient
/// scope), 401 for every other refusal.
fn token_status(e: &TokenError) -> u16 {
    match e {
        TokenError::AssociationMismatch { .. } => 403,
        _ => 401,
    }
}

/// The answer to a refused token: the reason in the JSON body and in the
/// `WWW-Authenticate` challenge (RFC 6750 section 3). The token itself is
/// never repeated: the error text quotes at most a clipped kid or alg.
fn token_refusal(e: &TokenError) -> Response {
    let why = e.to_string();
    if token_status(e) == 403 {
        return insufficient_scope(&why);
    }
    Response::error(401, &why).with(
        "WWW-Authenticate",
        format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            quotable(&why)
        ),
    )
}

fn insufficient_scope(why: &str) -> Response {
    Response::error(403, why).with(
        "WWW-Authenticate",
        format!(
            "Bearer error=\"insufficient_scope\", error_description=\"{}\"",
            quotable(why)
        ),
    )
}

fn unauthorized(why: &str) -> Response {
    Response::error(401, why).with("WWW-Authenticate", "Bearer")
}

/// The characters RFC 6750 allows in `error_description` (printable ASCII
/// but `"` and `\`); others become `'` or `?`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// The value of `name` in a request target's query string. A JWS is made of
/// URL-safe characters, so no percent-decoding is needed; a value that would
/// need it is not a token and fails verification.
fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_read_in_any_case_and_empty_ones_ignored() {
        assert_eq!(bearer(Some("Bearer abc.def.ghi")), Some("abc.def.ghi"));
        assert_eq!(bearer(Some("bearer  key ")), Some("key"));
        assert_eq!(bearer(Some("BEARER x")), Some("x"));
        assert_eq!(bearer(Some("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn the_token_query_parameter_is_found_among_others() {
        let path = "/jet/accept/a/c?x=1&token=aa.bb.cc&y";
        assert_eq!(query_param(path, "token"), Some("aa.bb.cc"));
        assert_eq!(query_param("/jet/accept/a/c?token=", "token"), None);
        assert_eq!(query_param("/jet/accept/a/c", "token"), None);
        assert_eq!(query_param("/p?tokens=1", "token"), None);
    }

    #[test]
    fn challenge_descriptions_hold_only_allowed_characters() {
        assert_eq!(quotable("kid \"a\\b\" é\n"), "kid 'a'b' ??");
    }
}
