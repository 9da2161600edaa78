//! The HTTP heads inside JET packets: requests the relay accepts, responses it writes.

use crate::wire::http;
use crate::Error;
use uuid::Uuid;

/// The most headers a JET request head may carry; deployed peers send four.
pub const MAX_HEADERS: usize = 32;

/// The candidate id that version 1 associations use: that exchange has no
/// candidates, so each association has exactly this one.
pub const V1_CANDIDATE: Uuid = Uuid::nil();

/// What a peer asks the relay to do with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Park this connection until the other peer connects (server peer).
    Accept,
    /// Pair this connection with the parked accept (client peer).
    Connect,
    /// Answer whether the association exists, then close (version 2 only).
    Test,
}

impl Method {
    /// The lowercase name used in version 2 paths and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Accept => "accept",
            Method::Connect => "connect",
            Method::Test => "test",
        }
    }
}

/// What a request asks for, with exactly the ids that request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A version 1 accept: it names no association; the relay creates one
    /// and answers with its id (its one candidate is [`V1_CANDIDATE`]).
    AcceptNew,
    /// Park this connection on a candidate until the other peer connects.
    Accept {
        /// The association.
        association: Uuid,
        /// The candidate ([`V1_CANDIDATE`] never: version 1 accepts are `AcceptNew`).
        candidate: Uuid,
    },
    /// Pair this connection with the accept parked on the candidate.
    Connect {
        /// The association.
        association: Uuid,
        /// The candidate; [`V1_CANDIDATE`] for a version 1 connect.
        candidate: Uuid,
    },
    /// Answer whether the candidate can be used, then close (version 2 and 3).
    Test {
        /// The association.
        association: Uuid,
        /// The candidate.
        candidate: Uuid,
    },
}

impl Command {
    /// The method this command is.
    pub fn method(self) -> Method {
        match self {
            Command::AcceptNew | Command::Accept { .. } => Method::Accept,
            Command::Connect { .. } => Method::Connect,
            Command::Test { .. } => Method::Test,
        }
    }

    /// The command for `method` on a named association and candidate.
    pub fn new(method: Method, association: Uuid, candidate: Uuid) -> Command {
        match method {
            Method::Accept => Command::Accept {
                association,
                candidate,
            },
            Method::Connect => Command::Connect {
                association,
                candidate,
            },
            Method::Test => Command::Test {
                association,
                candidate,
            },
        }
    }

    /// The association and candidate it names; `None` for [`Command::AcceptNew`].
    pub fn ids(self) -> Option<(Uuid, Uuid)> {
        match self {
            Command::AcceptNew => None,
            Command::Accept {
                association,
                candidate,
            }
            | Command::Connect {
                association,
                candidate,
            }
            | Command::Test {
                association,
                candidate,
            } => Some((association, candidate)),
        }
    }
}

/// A decoded JET request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The protocol version the peer speaks (1, 2 or 3); responses echo it.
    pub version: u8,
    /// What it asks for.
    pub command: Command,
}

impl Request {
    /// The method of its command.
    pub fn method(&self) -> Method {
        self.command.method()
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not an HTTP head at all: the relay closes without an answer.
    Malformed(String),
    /// An HTTP head the relay understands but cannot serve: answered with 400.
    BadRequest(String),
}

/// Parses an unmasked request payload.
pub fn parse_request(payload: &[u8]) -> Result<Request, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(payload) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(RequestError::Malformed("incomplete HTTP head".into()))
        }
        Err(e) => return Err(RequestError::Malformed(format!("not an HTTP head: {e}"))),
    }
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    // Lossy: a value that is not UTF-8 is refused below, not taken as absent.
    let header = |name: &str| http::header_lossy(req.headers, name);
    if method != "GET" {
        return Err(RequestError::BadRequest(format!(
            "method {method} is not GET"
        )));
    }
    let version = match header("Jet-Version") {
        None => None,
        Some(v) => match v.parse::<u8>() {
            Ok(n) => Some(n),
            Err(_) => return Err(RequestError::BadRequest(format!("bad Jet-Version {v:?}"))),
        },
    };
    if path == "/" {
        if version.is_some_and(|v| v != 1) {
            return Err(RequestError::BadRequest(format!(
                "Jet-Version {} is not supported on path /",
                version.unwrap_or_default()
            )));
        }
        let jet_method = header("Jet-Method").unwrap_or_default();
        let command = if jet_method.eq_ignore_ascii_case("accept") {
            Command::AcceptNew
        } else if jet_method.eq_ignore_ascii_case("connect") {
            let text = header("Jet-Association").ok_or_else(|| {
                RequestError::BadRequest("connect without Jet-Association".into())
            })?;
            Command::Connect {
                association: parse_uuid(&text, "association")?,
                candidate: V1_CANDIDATE,
            }
        } else {
            return Err(RequestError::BadRequest(format!(
                "unknown Jet-Method {jet_method:?}"
            )));
        };
        return Ok(Request {
            version: 1,
            command,
        });
    }
    let (method, association, candidate) = parse_path(path)?;
    let version = version.unwrap_or(2);
    if !(2..=3).contains(&version) {
        return Err(RequestError::BadRequest(format!(
            "Jet-Version {version} is not supported on /jet paths"
        )));
    }
    Ok(Request {
        version,
        command: Command::new(method, association, candidate),
    })
}

/// The version to echo in an answer to a request that could not be served:
/// its `Jet-Version` when that is a number, else 1 for `/` and 2 otherwise.
pub fn requested_version(payload: &[u8]) -> u8 {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(payload);
    let declared = http::header(req.headers, "Jet-Version").and_then(|v| v.parse::<u8>().ok());
    declared.unwrap_or(if req.path == Some("/") { 1 } else { 2 })
}

/// Parses a version 2 path `/jet/<accept|connect|test>/<association>/<candidate>`
/// (also used for WebSocket upgrades). A query string is ignored.
pub fn parse_path(path: &str) -> Result<(Method, Uuid, Uuid), RequestError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let mut parts = path.split('/');
    let (Some(""), Some("jet"), Some(verb), Some(assoc), Some(cand), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(RequestError::BadRequest(format!("unknown path {path:?}")));
    };
    let method = match verb {
        "accept" => Method::Accept,
        "connect" => Method::Connect,
        "test" => Method::Test,
        _ => return Err(RequestError::BadRequest(format!("unknown path {path:?}"))),
    };
    Ok((
        method,
        parse_uuid(assoc, "association")?,
        parse_uuid(cand, "candidate")?,
    ))
}

fn parse_uuid(text: &str, what: &str) -> Result<Uuid, RequestError> {
    Uuid::parse_str(text).map_err(|_| RequestError::BadRequest(format!("bad {what} id {text:?}")))
}

/// The header that carries why the relay refused a request (JET response
/// packets and WebSocket refusals). Deployed clients read only the status and
/// ignore headers they do not know, so it harms none of them.
pub const JET_ERROR: &str = "Jet-Error";

/// The most characters of a refusal's reason sent or shown: the whole JET
/// response must fit the single read of at most 1024 bytes deployed clients
/// make, and one line on a terminal is enough to say why.
pub const MAX_ERROR_TEXT: usize = 200;

/// A reason made safe for a header value and a terminal: printable ASCII
/// only (a CR or LF would end the header and start another, an escape
/// sequence would drive the terminal), runs of anything else one space or
/// `?`, trimmed and capped at [`MAX_ERROR_TEXT`] characters. Applied by the
/// relay before it sends a reason and by the peer before it prints one.
pub fn error_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_TEXT));
    for c in text.chars() {
        if out.len() >= MAX_ERROR_TEXT {
            break;
        }
        match c {
            ' '..='~' => out.push(c),
            // Line breaks and tabs separate words; keep them apart.
            '\r' | '\n' | '\t' if !out.ends_with(' ') => out.push(' '),
            '\r' | '\n' | '\t' => {}
            _ => out.push('?'),
        }
    }
    out.trim().to_owned()
}

/// Builds the response packet of a refusal: `status`, the `Jet-Version` and
/// the reason in a [`JET_ERROR`] header (made safe by [`error_text`]). The
/// reason phrase stays the standard one, which some clients show as the
/// status's name. An empty `why` sends no header (a host candidate's 200
/// goes through here too). Always fits the first 1024-byte read of a
/// deployed client.
pub fn refusal_packet(
    status: u16,
    version: u8,
    why: &str,
) -> Result<Vec<u8>, crate::wire::packet::PacketError> {
    let why = error_text(why);
    if why.is_empty() {
        return response_packet(status, version, &[]);
    }
    response_packet(status, version, &[(JET_ERROR, &why)])
}

/// Builds a whole response packet (head masked with 0x73) with `Jet-Version`
/// and any extra headers, ready for a single write.
pub fn response_packet(
    status: u16,
    version: u8,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, crate::wire::packet::PacketError> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", http::reason(status));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Jet-Version: {version}\r\n\r\n"));
    crate::wire::packet::encode(head.as_bytes(), crate::wire::packet::WRITE_MASK)
}

/// A response as a peer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (200 on success).
    pub status: u16,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The value of a header, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }

    /// Why the relay refused, from its [`JET_ERROR`] header, made safe to
    /// print; `None` when it gave no reason (older relays).
    pub fn error_reason(&self) -> Option<String> {
        self.header(JET_ERROR)
            .map(error_text)
            .filter(|why| !why.is_empty())
    }
}

/// Parses an unmasked response payload (any reason phrase, LF or CRLF); a
/// payload that is not an HTTP response head is [`Error::Protocol`].
pub fn parse_response(payload: &[u8]) -> crate::Result<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(payload) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Error::Protocol("incomplete response head".into()))
        }
        Err(e) => return Err(Error::Protocol(format!("not an HTTP response: {e}"))),
    }
    Ok(Response {
        status: resp.code.unwrap_or_default(),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect(),
    })
}

/// Builds the request head a peer sends: version 2 paths, or the version 1
/// `GET /` with `Jet-Method` when `version` is 1.
pub fn request_head(
    method: Method,
    version: u8,
    host: &str,
    association: Option<Uuid>,
    candidate: Uuid,
) -> String {
    if version == 1 {
        let verb = match method {
            Method::Accept => "Accept",
            Method::Connect => "Connect",
            Method::Test => "Test",
        };
        let assoc = association
            .map(|a| format!("Jet-Association: {a}\r\n"))
            .unwrap_or_default();
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Keep-Alive\r\nJet-Method: {verb}\r\n{assoc}Jet-Version: 1\r\n\r\n")
    } else {
        let connection = if method == Method::Test {
            "Close"
        } else {
            "Keep-Alive"
        };
        format!(
            "GET /jet/{}/{}/{candidate} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\nJet-Version: {version}\r\n\r\n",
            method.as_str(),
            association.unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e6ec698c-5793-4c63-af79-bd644ccf022f";
    const C: &str = "1ff84b5f-5a62-4124-bf61-381a5c55db89";

    #[track_caller]
    fn check(head: &str, expected: Result<(Method, u8), RequestError>) {
        let got = parse_request(head.as_bytes()).map(|r| (r.method(), r.version));
        assert_eq!(got, expected, "head: {head:?}");
    }

    fn bad(text: &str) -> Result<(Method, u8), RequestError> {
        Err(RequestError::BadRequest(text.into()))
    }

    #[test]
    fn request_table() {
        check(
            "GET / HTTP/1.1\r\nHost: x\r\nJet-Method: Accept\r\nJet-Version: 1\r\n\r\n",
            Ok((Method::Accept, 1)),
        );
        check(
            "GET / HTTP/1.1\nhost: x\njet-method: accept\n\n",
            Ok((Method::Accept, 1)),
        );
        check(
            &format!("GET / HTTP/1.1\r\nJet-Method: CONNECT\r\nJet-Association: {A}\r\n\r\n"),
            Ok((Method::Connect, 1)),
        );
        check(
            &format!("GET /jet/accept/{A}/{C} HTTP/1.1\r\nJet-Version: 2\r\n\r\n"),
            Ok((Method::Accept, 2)),
        );
        check(
            &format!("GET /jet/connect/{A}/{C} HTTP/1.1\nJet-Version: 3\n\n"),
            Ok((Method::Connect, 3)),
        );
        check(
            &format!("GET /jet/test/{A}/{C} HTTP/1.1\r\n\r\n"),
            Ok((Method::Test, 2)),
        );
        check(
            &format!("GET /jet/accept/{A}/{C} HTTP/1.1\r\nJet-Version: 9\r\n\r\n"),
            bad("Jet-Version 9 is not supported on /jet paths"),
        );
        check(
            "GET / HTTP/1.1\r\nJet-Method: Accept\r\nJet-Version: 2\r\n\r\n",
            bad("Jet-Version 2 is not supported on path /"),
        );
        check(
            &format!("GET /jet/accept/not-a-uuid/{C} HTTP/1.1\r\n\r\n"),
            bad("bad association id \"not-a-uuid\""),
        );
        check(
            &format!("GET /jet/bounce/{A}/{C} HTTP/1.1\r\n\r\n"),
            bad(&format!("unknown path \"/jet/bounce/{A}/{C}\"")),
        );
        check(
            &format!("GET /jet/accept/{A}/{C}/x HTTP/1.1\r\n\r\n"),
            bad(&format!("unknown path \"/jet/accept/{A}/{C}/x\"")),
        );
        check(
            "GET / HTTP/1.1\r\nJet-Method: Connect\r\nJet-Association: nope\r\n\r\n",
            bad("bad association id \"nope\""),
        );
        check(
            "GET / HTTP/1.1\r\nJet-Method: Dance\r\n\r\n",
            bad("unknown Jet-Method \"Dance\""),
        );
        check("POST / HTTP/1.1\r\n\r\n", bad("method POST is not GET"));
        assert!(matches!(
            parse_request(b"\x01\x02garbage\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn refusals_echo_the_declared_version() {
        let v3 = format!("GET /jet/accept/nope/{C} HTTP/1.1\r\nJet-Version: 3\r\n\r\n");
        assert_eq!(requested_version(v3.as_bytes()), 3);
        assert_eq!(
            requested_version(b"GET / HTTP/1.1\r\nJet-Method: x\r\n\r\n"),
            1
        );
        assert_eq!(requested_version(b"GET /jet/x HTTP/1.1\r\n\r\n"), 2);
    }

    #[test]
    fn response_packet_is_masked_and_parses_back() {
        let bytes = response_packet(200, 1, &[("Jet-Association", A)]).unwrap();
        assert_eq!(bytes[7], 0x73);
        let packet = crate::wire::packet::read_packet(&bytes[..]).unwrap();
        let resp = parse_response(&packet.payload).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("jet-association"), Some(A));
        assert_eq!(resp.header("Jet-Version"), Some("1"));
    }

    #[test]
    fn refusals_carry_a_safe_reason_that_fits_the_first_read() {
        let bytes = refusal_packet(404, 2, "unknown association").unwrap();
        let packet = crate::wire::packet::read_packet(&bytes[..]).unwrap();
        let resp = parse_response(&packet.payload).unwrap();
        assert_eq!(resp.status, 404);
        assert_eq!(resp.header("jet-error"), Some("unknown association"));
        assert_eq!(resp.error_reason().as_deref(), Some("unknown association"));
        assert!(String::from_utf8_lossy(&packet.payload).starts_with("HTTP/1.1 404 Not Found\r\n"));
        // A reason cannot inject a header, and a long one is capped.
        let hostile = format!(
            "bad\r\nSet-Cookie: x=1\r\n\r\n\u{1b}[2J{}",
            "é".repeat(2000)
        );
        let bytes = refusal_packet(400, 3, &hostile).unwrap();
        assert!(bytes.len() <= 1024, "{} bytes", bytes.len());
        let packet = crate::wire::packet::read_packet(&bytes[..]).unwrap();
        let resp = parse_response(&packet.payload).unwrap();
        assert_eq!(resp.header("Set-Cookie"), None);
        assert_eq!(resp.header("Jet-Version"), Some("3"));
        let why = resp.error_reason().unwrap();
        assert!(why.starts_with("bad Set-Cookie: x=1 ?[2J??"), "{why}");
        assert_eq!(why.len(), MAX_ERROR_TEXT);
        // No reason: no header.
        let bytes = refusal_packet(503, 2, " \r\n").unwrap();
        let packet = crate::wire::packet::read_packet(&bytes[..]).unwrap();
        assert_eq!(
            parse_response(&packet.payload).unwrap().error_reason(),
            None
        );
    }

    #[test]
    fn parses_the_old_relays_status_line() {
        let resp = parse_response(b"HTTP/1.1 200 OK 200\r\nJet-Version: 2\r\n\r\n").unwrap();
        assert_eq!(resp.status, 200);
    }

    #[test]
    fn request_heads_parse_back() {
        let a = Uuid::parse_str(A).unwrap();
        let c = Uuid::parse_str(C).unwrap();
        for method in [Method::Accept, Method::Connect, Method::Test] {
            let head = request_head(method, 2, "relay", Some(a), c);
            let req = parse_request(head.as_bytes()).unwrap();
            assert_eq!(req.command, Command::new(method, a, c));
        }
        let head = request_head(Method::Connect, 1, "relay", Some(a), V1_CANDIDATE);
        let req = parse_request(head.as_bytes()).unwrap();
        assert_eq!(req.version, 1);
        assert_eq!(
            req.command,
            Command::Connect {
                association: a,
                candidate: V1_CANDIDATE
            }
        );
    }
}
