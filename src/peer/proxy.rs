//! Proxies on the way to a relay: proxy URLs, the curl-like choice from the environment, and [`dial`].

mod deadline;
mod dial;
mod no_proxy;

pub(crate) use deadline::{context, Deadline};
pub use dial::{dial, MAX_CONNECT_HEAD};
pub use no_proxy::NoProxy;

use std::fmt;

/// The port of an `http://` proxy URL that leaves it out.
pub const DEFAULT_HTTP_PROXY_PORT: u16 = 80;
/// The port of a `socks5://` proxy URL that leaves it out (RFC 1928 §3).
pub const DEFAULT_SOCKS_PROXY_PORT: u16 = 1080;
/// The longest SOCKS5 user name or password (RFC 1929: one length byte).
pub const MAX_SOCKS_CREDENTIAL: usize = 255;

/// A proxy's host (a name, or an IP address without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ProxyAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A proxy a peer goes through to reach a relay.
///
/// Both `socks5://` and `socks5h://` send the relay's host *name* to the
/// proxy, which resolves it: peers behind a SOCKS proxy often have no outside
/// DNS, and a name keeps the proxy's name-based rules working. IP literals are
/// sent as addresses.
#[derive(Clone, PartialEq, Eq)]
pub enum Proxy {
    /// An HTTP proxy, tunnelling with `CONNECT`.
    Http {
        /// Where the proxy listens.
        addr: ProxyAddr,
        /// User name and password for `Proxy-Authorization: Basic`.
        auth: Option<(String, String)>,
    },
    /// A SOCKS5 proxy (RFC 1928).
    Socks5 {
        /// Where the proxy listens.
        addr: ProxyAddr,
        /// User name and password (RFC 1929).
        auth: Option<(String, String)>,
    },
}

impl Proxy {
    /// Parses `http://[USER[:PASS]@]HOST[:PORT][/]`, `socks5://…` or
    /// `socks5h://…`. No scheme means `http://` (as in curl); the port
    /// defaults to 80 for HTTP and 1080 for SOCKS5. USER and PASS are
    /// percent-decoded; an IPv6 host is written in brackets.
    pub fn parse(text: &str) -> Result<Proxy, ProxyUrlError> {
        let text = text.trim();
        let bad = |why: String| ProxyUrlError {
            url: mask_userinfo(text),
            why,
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), text),
        };
        let socks = match scheme.as_str() {
            "http" => false,
            "socks5" | "socks5h" => true,
            "https" => {
                return Err(bad(
                    "TLS to the proxy (https://) is not supported: use http://".into(),
                ))
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?} (use http, socks5 or socks5h)"
                )))
            }
        };
        // Environment values often end in '/'; anything more is a mistake.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path, query or fragment".into()));
        }
        // The last '@': an unencoded '@' in a password is common enough.
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let auth = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).map_err(|why| bad(format!("user name: {why}")))?;
                let pass = percent_decode(pass).map_err(|why| bad(format!("password: {why}")))?;
                Some((user, pass))
            }
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let port = match port {
            Some(port) => parse_port(port).map_err(bad)?,
            None if socks => DEFAULT_SOCKS_PROXY_PORT,
            None => DEFAULT_HTTP_PROXY_PORT,
        };
        let addr = ProxyAddr {
            host: host.to_owned(),
            port,
        };
        if socks {
            if let Some((user, pass)) = &auth {
                if user.is_empty() || user.len() > MAX_SOCKS_CREDENTIAL {
                    return Err(bad(format!(
                        "a SOCKS5 user name has 1 to {MAX_SOCKS_CREDENTIAL} bytes"
                    )));
                }
                if pass.len() > MAX_SOCKS_CREDENTIAL {
                    return Err(bad(format!(
                        "a SOCKS5 password has at most {MAX_SOCKS_CREDENTIAL} bytes"
                    )));
                }
            }
            Ok(Proxy::Socks5 { addr, auth })
        } else {
            Ok(Proxy::Http { addr, auth })
        }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> &ProxyAddr {
        match self {
            Proxy::Http { addr, .. } | Proxy::Socks5 { addr, .. } => addr,
        }
    }

    /// The user name and password, if any.
    pub fn auth(&self) -> Option<&(String, String)> {
        match self {
            Proxy::Http { auth, .. } | Proxy::Socks5 { auth, .. } => auth.as_ref(),
        }
    }

    /// "HTTP" or "SOCKS5", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Proxy::Http { .. } => "HTTP",
            Proxy::Socks5 { .. } => "SOCKS5",
        }
    }
}

/// The URL without credentials, safe for logs: `socks5://proxy:1080`.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self {
            Proxy::Http { .. } => "http",
            Proxy::Socks5 { .. } => "socks5",
        };
        write!(f, "{scheme}://{}", self.addr())
    }
}

/// Shows the user name but never the password, so logs can say which
/// account a proxy refused without leaking it.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.auth().map(|(user, _)| (user.as_str(), "***"));
        f.debug_struct(match self {
            Proxy::Http { .. } => "Http",
            Proxy::Socks5 { .. } => "Socks5",
        })
        .field("addr", &self.addr().to_string())
        .field("auth", &auth)
        .finish()
    }
}

/// A proxy URL that could not be used; the text never shows the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrlError {
    /// Where the URL came from and the URL itself, user info masked.
    pub url: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for ProxyUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proxy URL {}: {}", self.url, self.why)
    }
}

impl std::error::Error for ProxyUrlError {}

fn mask_userinfo(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    match rest.rsplit_once('@') {
        Some((_, hostport)) => format!("{scheme}***@{hostport}"),
        None => text.to_owned(),
    }
}

fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), String> {
    crate::wire::candidate::split_authority(hostport)
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{port:?} is not a port number"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("port {port} is above 65535")),
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after percent-decoding".into())
}

/// The proxies a peer may use, from `--proxy`, `--no-proxy` and the
/// environment.
///
/// Which variable serves which transport (lowercase names win over uppercase,
/// an empty value counts as unset):
///
/// | relay scheme | variables, the first one set wins               |
/// |--------------|-------------------------------------------------|
/// | `tls`, `wss` | `https_proxy`, `HTTPS_PROXY`, then `ALL_PROXY`  |
/// | `ws`         | `http_proxy` (lowercase only), then `ALL_PROXY` |
/// | `tcp`        | `all_proxy`, `ALL_PROXY`                        |
///
/// `tcp://` JET is not HTTP, so `http_proxy` (meant for plain HTTP URLs) does
/// not apply to it; `ws://` is an HTTP upgrade and does. Like curl, the
/// uppercase `HTTP_PROXY` is ignored: CGI servers put a request's `Proxy:`
/// header there ("httpoxy"). `NO_PROXY` applies to every proxy, the one from
/// `--proxy` included (as in curl), so a list can keep a local relay direct;
/// `--no-proxy` ignores all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    explicit: Option<Proxy>,
    https: Option<Proxy>,
    http: Option<Proxy>,
    all: Option<Proxy>,
    no_proxy: NoProxy,
}

impl ProxySettings {
    /// No proxy for anything (`--no-proxy`).
    pub fn direct() -> ProxySettings {
        ProxySettings::default()
    }

    /// The proxies the environment names; `lookup` reads one variable
    /// (`|name| std::env::var(name).ok()` in the CLI). A variable that is set
    /// but not a proxy URL is an error naming it.
    pub fn from_env(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ProxySettings, ProxyUrlError> {
        let var = |names: &[&'static str]| -> Result<Option<Proxy>, ProxyUrlError> {
            for name in names {
                if let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) {
                    return Proxy::parse(&value).map(Some).map_err(|e| ProxyUrlError {
                        url: format!("{name}={}", e.url),
                        why: e.why,
                    });
                }
            }
            Ok(None)
        };
        Ok(ProxySettings {
            explicit: None,
            https: var(&["https_proxy", "HTTPS_PROXY"])?,
            http: var(&["http_proxy"])?,
            all: var(&["all_proxy", "ALL_PROXY"])?,
            no_proxy: no_proxy_from_env(&lookup),
        })
    }

    /// What the command line asks for: `--no-proxy` wins, then `--proxy URL`
    /// (for every transport, still subject to `NO_PROXY`), then the environment.
    pub fn from_options(
        proxy: Option<&str>,
        no_proxy: bool,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ProxySettings, ProxyUrlError> {
        if no_proxy {
            return Ok(ProxySettings::direct());
        }
        match proxy {
            // Only NO_PROXY is read: a broken proxy variable must not stop a
            // peer that names its proxy.
            Some(url) => Ok(ProxySettings {
                explicit: Some(Proxy::parse(url).map_err(|e| ProxyUrlError {
                    url: format!("--proxy {}", e.url),
                    why: e.why,
                })?),
                no_proxy: no_proxy_from_env(&lookup),
                ..ProxySettings::default()
            }),
            None => ProxySettings::from_env(lookup),
        }
    }
}

fn no_proxy_from_env(lookup: impl Fn(&str) -> Option<String>) -> NoProxy {
    ["no_proxy", "NO_PROXY"]
        .into_iter()
        .find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()))
        .map(|list| NoProxy::parse(&list))
        .unwrap_or_default()
}

/// The proxy for a relay at `host:port` reached over `scheme` (`tcp`, `tls`,
/// `ws` or `wss`, any case; anything else is treated as `tcp`), or `None` to
/// connect directly.
pub fn proxy_for<'a>(
    settings: &'a ProxySettings,
    scheme: &str,
    host: &str,
    port: u16,
) -> Option<&'a Proxy> {
    let scheme = scheme.to_ascii_lowercase();
    let chosen = settings.explicit.as_ref().or(match scheme.as_str() {
        "tls" | "wss" => settings.https.as_ref().or(settings.all.as_ref()),
        "ws" => settings.http.as_ref().or(settings.all.as_ref()),
        _ => settings.all.as_ref(),
    })?;
    (!settings.no_proxy.matches(host, port)).then_some(chosen)
}

#[cfg(test)]
mod tests;
