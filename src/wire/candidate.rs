//! Candidate URLs (draft 0.2 §2.2.2.3.1) and the one transport enum: every
//! place that names tcp, tls, ws or wss uses [`Transport`].

use crate::error::{Error, Result};
use std::fmt;
use std::net::Ipv6Addr;

/// A transport: how a peer reaches the relay and how a connection arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The JET binary protocol over plain TCP.
    Tcp,
    /// The JET binary protocol inside TLS with the relay.
    Tls,
    /// The JET request in the path of a WebSocket upgrade.
    Ws,
    /// The same over TLS.
    Wss,
}

impl Transport {
    /// Every scheme, in the order candidates list them.
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// The URL scheme and transport name (`tcp`, `tls`, `ws`, `wss`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Parses a scheme or transport name, without regard to case.
    pub fn parse(text: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// The port a URL may leave out: only WebSocket schemes have one.
    pub fn default_port(self) -> Option<u16> {
        match self {
            Transport::Ws => Some(80),
            Transport::Wss => Some(443),
            Transport::Tcp | Transport::Tls => None,
        }
    }

    /// True when the connection to the relay is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// True for the WebSocket schemes.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// The WebSocket transport carried over this one (`Tcp` gives `Ws`, `Tls`
    /// gives `Wss`); WebSocket transports are their own answer.
    pub fn websocket(self) -> Transport {
        match self {
            Transport::Tcp | Transport::Ws => Transport::Ws,
            Transport::Tls | Transport::Wss => Transport::Wss,
        }
    }
}

/// A candidate URL (draft 0.2 §2.2.2.3.1): `SCHEME://HOST:PORT[?QUERY]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateUrl {
    /// The transport.
    pub scheme: Transport,
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    /// The port (the scheme's default when the URL left it out).
    pub port: u16,
    /// Whether the URL wrote the port: the `Host` header repeats it only then.
    pub explicit_port: bool,
    /// The query string after `?`, kept as written (`ctype=relay`).
    pub query: Option<String>,
}

impl CandidateUrl {
    /// Parses a candidate URL. No scheme means `tcp://`; the port may be left
    /// out only for `ws://` (80) and `wss://` (443); a query is kept; a path,
    /// user info or fragment is an error.
    pub fn parse(text: &str) -> Result<CandidateUrl> {
        let bad = |why: &str| Error::Config(format!("candidate URL {text:?}: {why}"));
        let (scheme, rest) = match text.split_once("://") {
            Some((name, rest)) => {
                let scheme = Transport::parse(name).ok_or_else(|| {
                    bad(&format!(
                        "unsupported scheme {name:?} (use tcp, tls, ws or wss)"
                    ))
                })?;
                (scheme, rest)
            }
            None => (Transport::Tcp, text),
        };
        if rest.contains('#') {
            return Err(bad("a candidate URL has no fragment"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, (!query.is_empty()).then(|| query.to_owned())),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad(&format!("a candidate URL has no path ({path:?})")));
        }
        if authority.contains('@') {
            return Err(bad("a candidate URL has no user info"));
        }
        let (host, port) = split_authority(authority).map_err(|e| bad(&e))?;
        let (port, explicit_port) = match port {
            Some(port) => match port.parse::<u16>() {
                Ok(0) => return Err(bad("port 0 cannot be connected to")),
                Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) => (p, true),
                _ => return Err(bad(&format!("{port:?} is not a port number"))),
            },
            None => match scheme.default_port() {
                Some(p) => (p, false),
                None => {
                    return Err(bad(&format!(
                        "{}:// needs a port (only ws and wss have a default)",
                        scheme.as_str()
                    )))
                }
            },
        };
        Ok(CandidateUrl {
            scheme,
            host: host.to_owned(),
            port,
            explicit_port,
            query,
        })
    }

    /// `HOST:PORT` for connecting (brackets around an IPv6 address).
    pub fn address(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The host as written in a URL or a `Host` header, with the port when
    /// the URL had one.
    pub fn authority(&self) -> String {
        if self.explicit_port {
            self.address()
        } else {
            self.bracketed_host()
        }
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The value of a query parameter (`ctype`), if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// The candidate type from `?ctype=`: `host` or `relay` (none: unknown).
    pub fn ctype(&self) -> Option<&str> {
        self.query_param("ctype")
    }

    /// The same URL with `name=value` added to the query, unless `name` is
    /// already there.
    pub fn with_param(&self, name: &str, value: &str) -> CandidateUrl {
        let mut url = self.clone();
        if url.query_param(name).is_none() {
            url.query = Some(match url.query.take() {
                Some(q) => format!("{q}&{name}={value}"),
                None => format!("{name}={value}"),
            });
        }
        url
    }

    /// The same URL aimed at a relay instance named by a `Jet-Instance`
    /// header: `HOST` keeps the port, `HOST:PORT` replaces both.
    pub fn with_instance(&self, instance: &str) -> Result<CandidateUrl> {
        let probe = format!("{}://{instance}", self.scheme.as_str());
        let mut url = match CandidateUrl::parse(&probe) {
            Ok(parsed) => parsed,
            Err(_) => {
                let with_port = format!("{probe}:{}", self.port);
                CandidateUrl::parse(&with_port).map_err(|_| {
                    Error::Protocol(format!("Jet-Instance {instance:?} is not a host"))
                })?
            }
        };
        if !url.explicit_port {
            url.port = self.port;
            url.explicit_port = self.explicit_port;
        }
        url.query.clone_from(&self.query);
        Ok(url)
    }
}

/// Splits `HOST[:PORT]` (an IPv6 host in brackets) and checks the host's
/// characters; the port, if any, is left for the caller to parse. Shared by
/// candidate URLs and proxy URLs.
pub fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or("unclosed '[' around an IPv6 address")?;
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected ':PORT' after the IPv6 address")?,
            ),
        };
        return Ok((addr, port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            return Err("an IPv6 address must be written in brackets".into())
        }
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    Ok((host, port))
}

impl fmt::Display for CandidateUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (scheme, host, port, authority, query) or the start of the error text.
    type Expected = std::result::Result<
        (
            Transport,
            &'static str,
            u16,
            &'static str,
            Option<&'static str>,
        ),
        &'static str,
    >;

    #[track_caller]
    fn check(text: &str, expected: Expected) {
        let got = CandidateUrl::parse(text);
        match (got, expected) {
            (Ok(url), Ok((scheme, host, port, authority, query))) => {
                assert_eq!(
                    (
                        url.scheme,
                        url.host.as_str(),
                        url.port,
                        url.authority().as_str(),
                        url.query.as_deref()
                    ),
                    (scheme, host, port, authority, query),
                    "for {text:?}"
                );
                // What parses prints back to something that parses the same.
                assert_eq!(
                    CandidateUrl::parse(&url.to_string()).unwrap(),
                    url,
                    "for {text:?}"
                );
            }
            (Err(e), Err(why)) => {
                let e = e.to_string();
                assert!(e.contains(why), "for {text:?}: {e:?} should say {why:?}");
            }
            (got, expected) => panic!("for {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn candidate_url_table() {
        use Transport::*;
        check(
            "tcp://jet101.wayk.net:8080",
            Ok((Tcp, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check(
            "jet101.wayk.net:8080",
            Ok((Tcp, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check("TCP://relay:1", Ok((Tcp, "relay", 1, "relay:1", None)));
        check(
            "tls://jet101.wayk.net:4343",
            Ok((Tls, "jet101.wayk.net", 4343, "jet101.wayk.net:4343", None)),
        );
        check(
            "ws://jet101.wayk.net:8080",
            Ok((Ws, "jet101.wayk.net", 8080, "jet101.wayk.net:8080", None)),
        );
        check(
            "ws://jet101.wayk.net",
            Ok((Ws, "jet101.wayk.net", 80, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet101.wayk.net",
            Ok((Wss, "jet101.wayk.net", 443, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet101.wayk.net/",
            Ok((Wss, "jet101.wayk.net", 443, "jet101.wayk.net", None)),
        );
        check(
            "wss://jet.wayk.net:7171?ctype=relay",
            Ok((
                Wss,
                "jet.wayk.net",
                7171,
                "jet.wayk.net:7171",
                Some("ctype=relay"),
            )),
        );
        check(
            "tcp://10.1.21.34:4489?ctype=host",
            Ok((
                Tcp,
                "10.1.21.34",
                4489,
                "10.1.21.34:4489",
                Some("ctype=host"),
            )),
        );
        check(
            "127.0.0.1:9?ctype=relay&x=1",
            Ok((Tcp, "127.0.0.1", 9, "127.0.0.1:9", Some("ctype=relay&x=1"))),
        );
        check("tcp://[::1]:7", Ok((Tcp, "::1", 7, "[::1]:7", None)));
        check(
            "wss://[2001:db8::1]",
            Ok((Wss, "2001:db8::1", 443, "[2001:db8::1]", None)),
        );
        check("tcp://relay.example", Err("tcp:// needs a port"));
        check("tls://relay.example", Err("tls:// needs a port"));
        check("relay.example", Err("tcp:// needs a port"));
        check("gopher://x:1", Err("unsupported scheme \"gopher\""));
        check("http://x:1", Err("unsupported scheme \"http\""));
        check("tcp://:8080", Err("the host is empty"));
        check("tcp://relay:http", Err("is not a port number"));
        check("tcp://relay:+80", Err("is not a port number"));
        check("tcp://relay:70000", Err("is not a port number"));
        check("tcp://relay:0", Err("port 0"));
        check("tcp://::1:80", Err("in brackets"));
        check("tcp://[::1", Err("unclosed"));
        check("tcp://[nope]:1", Err("not an IPv6 address"));
        check("tcp://user@relay:1", Err("user info"));
        check("ws://relay:1/jet/accept", Err("has no path"));
        check("tcp://relay:1#top", Err("fragment"));
        check("tcp://re lay:1", Err("not a host name"));
    }

    #[test]
    fn query_parameters_and_instances() {
        let url = CandidateUrl::parse("tcp://relay:8080?ctype=relay&x=1").unwrap();
        assert_eq!(url.ctype(), Some("relay"));
        assert_eq!(url.query_param("x"), Some("1"));
        assert_eq!(url.query_param("y"), None);
        let plain = CandidateUrl::parse("tcp://relay:8080").unwrap();
        assert_eq!(
            plain.with_param("ctype", "relay").to_string(),
            "tcp://relay:8080?ctype=relay"
        );
        assert_eq!(
            url.with_param("ctype", "host").to_string(),
            "tcp://relay:8080?ctype=relay&x=1"
        );
        assert_eq!(
            url.with_instance("jet7.example").unwrap().to_string(),
            "tcp://jet7.example:8080?ctype=relay&x=1"
        );
        assert_eq!(
            url.with_instance("jet7.example:9000").unwrap().to_string(),
            "tcp://jet7.example:9000?ctype=relay&x=1"
        );
        let wss = CandidateUrl::parse("wss://relay").unwrap();
        assert_eq!(wss.with_instance("jet7").unwrap().to_string(), "wss://jet7");
        assert!(url.with_instance("bad host").is_err());
    }
}
