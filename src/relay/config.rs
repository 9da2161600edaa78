//! The relay's configuration: `relay.toml`, parsed and validated before anything starts.

use crate::error::{Error, Result};
use crate::log::{Format, Level};
pub use crate::relay::cidr::{Cidr, CidrSet};
pub use crate::relay::limits::LimitsConfig;
pub use crate::wire::secret::ApiKey;
use crate::wire::Transport;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Handshake timeout when the file does not set one.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an association waits to be selected when the file does not say.
pub const DEFAULT_ASSOCIATION_TTL: Duration = Duration::from_secs(300);
/// How long an ended association stays visible when the file does not say.
pub const DEFAULT_ENDED_RETENTION: Duration = Duration::from_secs(10);

/// How long a drain lets relaying pairs finish by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The `instance` when the file does not set one. It means "not set": a
/// version 1 accept then names the address it arrived on in `Jet-Instance`.
pub const DEFAULT_INSTANCE: &str = "localhost";

/// The longest `instance`: a DNS name (253) with a port. Every version 1
/// accept carries it in a JET packet, whose 16-bit size must hold it.
pub const MAX_INSTANCE_LEN: usize = 260;

/// The longest duration any setting takes: far beyond any sensible timeout,
/// and far from the overflow of `Instant` arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The whole configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The name the relay gives in `Jet-Instance` (host and port peers should use).
    pub instance: String,
    /// `off`, `error`, `warn`, `info` or `debug`; `JET_RELAY_LOG` overrides it.
    #[serde(deserialize_with = "level")]
    pub log_level: Level,
    /// `text` (a line a person reads, fields as `key=value`) or `json` (one
    /// object per line, for a log aggregator).
    #[serde(deserialize_with = "format")]
    pub log_format: Format,
    /// A connection that has not sent a whole request within this time is closed.
    #[serde(deserialize_with = "seconds")]
    pub handshake_timeout: Duration,
    /// An association that no candidate has been selected on is removed after this.
    #[serde(deserialize_with = "seconds")]
    pub association_ttl: Duration,
    /// A pair that carries no byte for this long, with none waiting to be
    /// written, is closed; zero turns it off. A direction blocked writing
    /// toward a peer that does not read keeps the pair (TCP's own
    /// retransmission timeout ends it if that peer is gone).
    #[serde(deserialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// An association whose relays have all ended stays visible this long.
    #[serde(deserialize_with = "seconds")]
    pub ended_retention: Duration,
    /// How long a drain (SIGTERM) lets relaying pairs run before it cuts
    /// them; zero cuts at once.
    #[serde(deserialize_with = "seconds")]
    pub drain_timeout: Duration,
    /// The most associations held at once; more are refused with 503.
    pub max_associations: usize,
    /// The most accepts parked at once on the whole relay (each holds a
    /// descriptor); past it accepts get 503. 0 derives it: half the
    /// descriptor limit (`RLIMIT_NOFILE`). Either way it leaves
    /// `RESERVED_DESCRIPTORS` (32) for `/health`, the REST
    /// API and pairing.
    pub max_parked_accepts: usize,
    /// The most connection and copy threads; 0 derives it from the kernel's
    /// limits (`vm.max_map_count`, `kernel.pid_max`, `threads-max`). New
    /// connections are closed at once while the limit is reached.
    pub max_threads: usize,
    /// Relay plain TCP pairs with splice(2) through a kernel pipe (Linux);
    /// false forces the portable read/write copy for every pair. TLS and
    /// WebSocket pairs always copy through user space.
    pub zero_copy: bool,
    /// Where the relay listens.
    pub listeners: Vec<ListenerConfig>,
    /// The listen backlog of every listener: connections the kernel holds
    /// before the relay accepts them (capped by `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// The administrator's credential. When set, every REST call but
    /// `/health` needs `Authorization: Bearer <key>` (or a token, with
    /// `token_keys`); unset, listing, inspecting and deleting associations
    /// are refused (403), since they would reveal ids to anyone.
    pub api_key: Option<ApiKey>,
    /// When true, a JET accept may only use an association created through the
    /// REST API. Defaults to true when `api_key` or `token_keys` is set.
    pub accept_requires_api: Option<bool>,
    /// `Access-Control-Allow-Origin` for REST answers (`*` or an origin), so a
    /// browser page can create associations before opening a WebSocket.
    pub cors_origin: Option<String>,
    /// `HOST:PORT` of a listener that serves `GET /metrics` and nothing else,
    /// so Prometheus needs no API key (and no JET peer reaches it).
    pub metrics_listen: Option<String>,
    /// When set, the `metrics_listen` listener wants `Authorization: Bearer <token>`.
    pub metrics_token: Option<ApiKey>,
    /// PEM public keys of the authority that signs association tokens (JET
    /// v3), several for rotation; a relative path starts at the config
    /// file's folder. Empty: tokens are neither taken nor required.
    pub token_keys: Vec<PathBuf>,
    /// Clock skew allowed on a token's `exp`, `nbf` and `iat`.
    #[serde(deserialize_with = "seconds")]
    pub token_leeway: Duration,
    /// Development only: accept unsigned (`alg: none`) tokens, which anyone can write.
    pub allow_unsigned_tokens: bool,
    /// When tokens are configured, binary JET (tcp://, tls://) accepts and
    /// connects need one too (`Authorization: Bearer` in the JET head).
    /// Off by default: deployed JET clients carry no token in the packet.
    pub require_jet_tokens: bool,
    /// Per-client limits (the `[client_limits]` table): connections,
    /// handshakes, parked accepts and the REST rate.
    pub client_limits: LimitsConfig,
    /// The balancers allowed to send a PROXY header on `proxy_protocol`
    /// listeners; a connection from any other address there is closed.
    pub trusted_proxies: CidrSet,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`; port 0 picks a free port.
    #[serde(deserialize_with = "listen_url")]
    pub url: ListenUrl,
    /// The URL peers use to reach this listener from outside (behind NAT or a
    /// load balancer); gathered candidates are built from it.
    #[serde(default)]
    pub external_url: Option<String>,
    /// PEM file with the certificate chain (server certificate first); TLS
    /// listeners only. A relative path is taken from the config file's folder.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key; TLS listeners only.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Sets `SO_REUSEPORT`, so a new relay process can bind the same port
    /// while this one drains (a restart without refusing connections).
    #[serde(default)]
    pub reuse_port: bool,
    /// Every connection starts with a PROXY header (v1 or v2) from one of
    /// `trusted_proxies`, naming the real client; read before TLS and JET.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl ListenerConfig {
    /// A listener on `url` with no external URL and no certificate.
    pub fn new(url: ListenUrl) -> ListenerConfig {
        ListenerConfig {
            url,
            external_url: None,
            cert: None,
            key: None,
            reuse_port: false,
            proxy_protocol: false,
        }
    }
}

/// A parsed listener URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    /// The scheme: `tcp` or `tls` (a listener serves the WebSocket
    /// transport of its scheme too, see [`ListenUrl::transports`]).
    pub scheme: Transport,
    /// `HOST:PORT` as written, resolved when binding.
    pub address: String,
}

impl ListenUrl {
    /// The candidate transports a listener serves, for gathering: JET and
    /// WebSocket, both inside TLS on a TLS listener.
    pub fn transports(&self) -> [Transport; 2] {
        [self.scheme, self.scheme.websocket()]
    }

    /// Parses `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub fn parse(text: &str) -> std::result::Result<ListenUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not a URL like tcp://127.0.0.1:8080"))?;
        let scheme = match scheme {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => {
                return Err(format!(
                    "{text:?}: unsupported scheme {other:?} (use tcp or tls)"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let Some((host, port)) = rest.rsplit_once(':').filter(|(host, _)| !host.is_empty()) else {
            return Err(format!("{text:?} needs a host and a numeric port"));
        };
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if (host.contains(':') || host.starts_with('[')) && !bracketed {
            return Err(format!(
                "{text:?}: an IPv6 host goes in brackets, like tcp://[::1]:8080"
            ));
        }
        if port.parse::<u16>().is_err() {
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            return Err(if digits {
                format!("{text:?}: port {port} is out of range (0 to 65535)")
            } else {
                format!("{text:?} needs a host and a numeric port")
            });
        }
        Ok(ListenUrl {
            scheme,
            address: rest.to_owned(),
        })
    }
}

/// The scheme of an `external_url`, when it is one peers can use.
fn external_scheme(url: &str) -> Option<Transport> {
    Transport::parse(url.split_once("://")?.0)
}

/// The candidate transports gathered for a listener. Without an external URL,
/// the listener's own ([`ListenUrl::transports`]). With one, its scheme says
/// what the address in front speaks: `tcp://` or `tls://` (a TCP pass-through,
/// or TLS ended there) carries both JET and WebSocket; `ws://` or `wss://` (an
/// HTTP balancer) carries WebSocket only, because it cannot route the masked
/// JET packet of a `tcp://` candidate.
pub fn advertised_transports(listener: &ListenUrl, external_url: Option<&str>) -> Vec<Transport> {
    match external_url.and_then(external_scheme) {
        None => listener.transports().to_vec(),
        Some(scheme) if scheme.is_websocket() => vec![scheme],
        Some(scheme) => vec![scheme, scheme.websocket()],
    }
}

impl std::fmt::Display for ListenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.address)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            instance: DEFAULT_INSTANCE.into(),
            log_level: Level::Info,
            log_format: Format::Text,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            association_ttl: DEFAULT_ASSOCIATION_TTL,
            idle_timeout: Duration::ZERO,
            ended_retention: DEFAULT_ENDED_RETENTION,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_associations: crate::relay::table::DEFAULT_MAX_ASSOCIATIONS,
            max_parked_accepts: 0,
            max_threads: 0,
            listeners: vec![ListenerConfig::new(
                ListenUrl::parse("tcp://127.0.0.1:8080").expect("the default URL is valid"),
            )],
            listen_backlog: crate::relay::socket::DEFAULT_BACKLOG,
            api_key: None,
            accept_requires_api: None,
            cors_origin: None,
            metrics_listen: None,
            metrics_token: None,
            trusted_proxies: CidrSet::default(),
            zero_copy: true,
            token_keys: Vec::new(),
            token_leeway: crate::relay::token::DEFAULT_LEEWAY,
            allow_unsigned_tokens: false,
            require_jet_tokens: false,
            client_limits: LimitsConfig::default(),
        }
    }
}

impl Config {
    /// Parses and validates a configuration text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(describe(text, &e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file; errors name the file. Relative
    /// certificate, key and token key paths are made relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        // One "configuration:" prefix: the file name goes inside the message.
        let mut config = Config::from_toml(&text).map_err(|e| match e {
            Error::Config(why) => Error::Config(format!("{}: {why}", path.display())),
            other => other,
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        for listener in &mut config.listeners {
            for file in [&mut listener.cert, &mut listener.key]
                .into_iter()
                .flatten()
            {
                if file.is_relative() {
                    *file = folder.join(&*file);
                }
            }
        }
        for file in &mut config.token_keys {
            if file.is_relative() {
                *file = folder.join(&*file);
            }
        }
        Ok(config)
    }

    /// Whether JET accepts must name an association created through the API:
    /// by default whenever associations are authorized (an API key or tokens).
    pub fn accept_requires_api(&self) -> bool {
        self.accept_requires_api
            .unwrap_or(self.api_key.is_some() || self.tokens_configured())
    }

    /// Whether association tokens are checked: keys are configured, or
    /// unsigned tokens are allowed for development.
    pub fn tokens_configured(&self) -> bool {
        !self.token_keys.is_empty() || self.allow_unsigned_tokens
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("association_ttl", self.association_ttl),
            ("idle_timeout", self.idle_timeout),
            ("ended_retention", self.ended_retention),
            ("token_leeway", self.token_leeway),
        ] {
            if value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{key} must be at most {} seconds (one year)",
                    MAX_DURATION.as_secs()
                )));
            }
        }
        if self.max_threads != 0 && self.max_threads < 16 {
            return Err(Error::Config(
                "max_threads must be 0 (derived from the kernel) or at least 16".into(),
            ));
        }
        if self.max_associations == 0 {
            return Err(Error::Config("max_associations must be above zero".into()));
        }
        if self.listen_backlog == 0 {
            return Err(Error::Config("listen_backlog must be at least 1".into()));
        }
        if self.handshake_timeout.is_zero() {
            return Err(Error::Config("handshake_timeout must be above zero".into()));
        }
        if self.association_ttl.is_zero() {
            return Err(Error::Config("association_ttl must be above zero".into()));
        }
        if self.instance.is_empty() || self.instance.chars().any(|c| c.is_control()) {
            return Err(Error::Config(
                "instance must be a non-empty name without control characters".into(),
            ));
        }
        if self.instance.len() > MAX_INSTANCE_LEN {
            return Err(Error::Config(format!(
                "instance is {} bytes long; at most {MAX_INSTANCE_LEN} (a host name and port) fit the Jet-Instance header",
                self.instance.len()
            )));
        }
        if self.require_jet_tokens && !self.tokens_configured() {
            return Err(Error::Config(
                "require_jet_tokens needs token_keys (the keys tokens are checked with)".into(),
            ));
        }
        if let Some(origin) = &self.cors_origin {
            if origin.is_empty() || origin.chars().any(|c| c.is_control() || c == ' ') {
                return Err(Error::Config(
                    "cors_origin must be `*` or an origin like https://app.example.com".into(),
                ));
            }
        }
        if let Some(addr) = &self.metrics_listen {
            // Parsed as a tcp:// URL for the same rules, but shown as written.
            let url = ListenUrl::parse(&format!("tcp://{addr}")).map_err(|why| {
                let why = why.replace(
                    &format!("{:?}", format!("tcp://{addr}")),
                    &format!("{addr:?}"),
                );
                Error::Config(format!("metrics_listen: {why}"))
            })?;
            if let Some(clash) = self.listeners.iter().find(|l| l.url.address == url.address) {
                if !addr.ends_with(":0") {
                    return Err(Error::Config(format!(
                        "metrics_listen {addr} is also the address of listener {}",
                        clash.url
                    )));
                }
            }
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.proxy_protocol && self.trusted_proxies.is_empty() {
                return Err(Error::Config(format!(
                    "listeners[{i}] ({}) has proxy_protocol = true but trusted_proxies is empty: list the load balancers' addresses, like trusted_proxies = [\"10.0.0.0/24\"], or every connection there would be refused",
                    listener.url
                )));
            }
            if let Some(url) = &listener.external_url {
                let authority = url.split_once("://").map(|(_, rest)| rest);
                if external_scheme(url).is_none() || authority.is_none_or(str::is_empty) {
                    return Err(Error::Config(format!(
                        "listeners[{i}].external_url {url:?} must look like tcp://HOST:PORT (or tls://, ws://, wss://: the scheme peers use at that address)"
                    )));
                }
            }
        }
        if self.listeners.is_empty() {
            return Err(Error::Config(
                "listeners: at least one listener is needed".into(),
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            // Port 0 asks for a fresh port each time: two of those never clash.
            let same = self.listeners[..i].iter().find(|earlier| {
                earlier.url.address == listener.url.address && !earlier.url.address.ends_with(":0")
            });
            match same {
                Some(earlier) if earlier.url == listener.url => {
                    return Err(Error::Config(format!(
                        "listeners: {} is listed twice",
                        listener.url
                    )))
                }
                Some(earlier) => {
                    return Err(Error::Config(format!(
                        "listeners: {} and {} cannot both bind {}",
                        earlier.url, listener.url, listener.url.address
                    )))
                }
                None => {}
            }
        }
        for listener in &self.listeners {
            let has_files = (listener.cert.is_some(), listener.key.is_some());
            match (listener.url.scheme, has_files) {
                (Transport::Tls, (true, true)) | (Transport::Tcp, (false, false)) => {}
                (Transport::Tls, _) => {
                    return Err(Error::Config(format!(
                        "listeners: {} needs both cert and key (PEM files)",
                        listener.url
                    )))
                }
                (Transport::Tcp, _) => {
                    return Err(Error::Config(format!(
                        "listeners: cert and key are for tls:// listeners, not {}",
                        listener.url
                    )))
                }
                // ListenUrl::parse takes only tcp:// and tls://.
                (Transport::Ws | Transport::Wss, _) => {
                    return Err(Error::Config(format!(
                        "listeners: {} is not a listener scheme (use tcp or tls)",
                        listener.url
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Keys whose values are secrets, masked in error messages.
const SECRET_KEYS: [&str; 2] = ["api_key", "metrics_token"];

/// A TOML parse or type error as a person reads it: the line number, the
/// line itself, and what was wrong, without serde's vocabulary (`usize`,
/// `sequence`, `untagged enum`).
fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .replace("expected usize", "expected a whole number")
        .replace("expected u64", "expected a whole number")
        .replace("a sequence", "a list")
        .replace("type: sequence", "type: list")
        .replace("type: map", "type: table")
        .replace("expected a map", "expected a table")
        .replace("expected a boolean", "expected true or false")
        .replace(
            "expected struct ListenerConfig",
            "expected a [[listeners]] table",
        );
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let Some(shown) = text
        .lines()
        .nth(line - 1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
    else {
        return format!("line {line}: {message}");
    };
    // A secret is never repeated, even a wrong one: show its key alone.
    let key = shown.split('=').next().unwrap_or_default().trim();
    if SECRET_KEYS.contains(&key) {
        // ApiKey's own message says "api_key" whichever key holds it.
        let message = message.replacen("api_key ", &format!("{key} "), 1);
        return format!("line {line}: `{key} = ***`: {message}");
    }
    format!("line {line}: `{shown}`: {message}")
}

/// Seconds as a whole or fractional TOML number, 0 or more.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number of seconds, like 10 or 0.5")
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<f64, E> {
            Ok(n as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<f64, E> {
            Ok(n as f64)
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> std::result::Result<f64, E> {
            Ok(n)
        }
    }
    let secs = d.deserialize_any(Seconds)?;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        serde::de::Error::custom(format!("{secs} is not a number of seconds (0 or more)"))
    })
}

fn level<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Level, D::Error> {
    let text = String::deserialize(d)?;
    Level::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{text:?} is not a log level (off, error, warn, info, debug)"
        ))
    })
}

fn format<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Format, D::Error> {
    let text = String::deserialize(d)?;
    Format::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("{text:?} is not a log format (text, json)"))
    })
}

fn listen_url<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<ListenUrl, D::Error> {
    let text = String::deserialize(d)?;
    ListenUrl::parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
