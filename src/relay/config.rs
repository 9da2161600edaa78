//! The relay's configuration: `relay.toml`, parsed and validated before anything starts.

use crate::error::{Error, Result};
use crate::log::Level;
use crate::relay::cidr::CidrSet;
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
    /// A connection that has not sent a whole request within this time is closed.
    #[serde(deserialize_with = "seconds")]
    pub handshake_timeout: Duration,
    /// An association that no candidate has been selected on is removed after this.
    #[serde(deserialize_with = "seconds")]
    pub association_ttl: Duration,
    /// A pair that carries no byte for this long is closed; zero turns it off.
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
    /// When set, every REST call but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<ApiKey>,
    /// When true, a JET accept may only use an association created through the
    /// REST API. Defaults to true when `api_key` is set, false otherwise.
    pub accept_requires_api: Option<bool>,
    /// `Access-Control-Allow-Origin` for REST answers (`*` or an origin), so a
    /// browser page can create associations before opening a WebSocket.
    pub cors_origin: Option<String>,
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
        let port_ok = rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{text:?} needs a host and a numeric port"));
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
            instance: "localhost".into(),
            log_level: Level::Info,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            association_ttl: DEFAULT_ASSOCIATION_TTL,
            idle_timeout: Duration::ZERO,
            ended_retention: DEFAULT_ENDED_RETENTION,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_associations: crate::relay::table::DEFAULT_MAX_ASSOCIATIONS,
            max_threads: 0,
            listeners: vec![ListenerConfig::new(
                ListenUrl::parse("tcp://127.0.0.1:8080").expect("the default URL is valid"),
            )],
            listen_backlog: crate::relay::socket::DEFAULT_BACKLOG,
            api_key: None,
            accept_requires_api: None,
            cors_origin: None,
            trusted_proxies: CidrSet::default(),
            zero_copy: true,
        }
    }
}

impl Config {
    /// Parses and validates a configuration text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file; errors name the file. Relative
    /// certificate and key paths are made relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut config = Config::from_toml(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
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
        Ok(config)
    }

    /// Whether JET accepts must name an association created through the API.
    pub fn accept_requires_api(&self) -> bool {
        self.accept_requires_api.unwrap_or(self.api_key.is_some())
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("association_ttl", self.association_ttl),
            ("idle_timeout", self.idle_timeout),
            ("ended_retention", self.ended_retention),
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
        if let Some(origin) = &self.cors_origin {
            if origin.is_empty() || origin.chars().any(|c| c.is_control() || c == ' ') {
                return Err(Error::Config(
                    "cors_origin must be `*` or an origin like https://app.example.com".into(),
                ));
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

fn seconds<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Float(f64),
    }
    let secs = match Number::deserialize(d)? {
        Number::Int(n) => n as f64,
        Number::Float(f) => f,
    };
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

fn listen_url<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<ListenUrl, D::Error> {
    let text = String::deserialize(d)?;
    ListenUrl::parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_err(text: &str, needle: &str) {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn an_instance_too_long_for_a_jet_packet_is_refused() {
        // 70,000 bytes cannot be carried by a version 1 accept's answer (a
        // JET packet holds at most 65,527): once a panic in every such accept.
        check_err(
            &format!("instance = \"{}\"", "r".repeat(70_000)),
            "instance is 70000 bytes long",
        );
        check_err(
            &format!("instance = \"{}\"", "r".repeat(MAX_INSTANCE_LEN + 1)),
            "instance",
        );
        let longest = format!("instance = \"{}\"", "r".repeat(MAX_INSTANCE_LEN));
        assert_eq!(
            Config::from_toml(&longest).unwrap().instance.len(),
            MAX_INSTANCE_LEN
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(config.association_ttl, DEFAULT_ASSOCIATION_TTL);
        assert_eq!(config.idle_timeout, Duration::ZERO);
        assert!(config.zero_copy);
        assert_eq!(config.listeners[0].url.to_string(), "tcp://127.0.0.1:8080");
    }

    #[test]
    fn fractional_seconds_and_listeners() {
        let config = Config::from_toml(
            "handshake_timeout = 0.25\nidle_timeout = 3\n[[listeners]]\nurl = \"tcp://[::1]:0\"\n",
        )
        .unwrap();
        assert_eq!(config.handshake_timeout, Duration::from_millis(250));
        assert_eq!(config.idle_timeout, Duration::from_secs(3));
        assert_eq!(config.listeners[0].url.address, "[::1]:0");
    }

    #[test]
    fn errors_name_the_key() {
        check_err("handshake_timout = 3", "handshake_timout");
        check_err("handshake_timeout = \"soon\"", "handshake_timeout");
        check_err("handshake_timeout = -1", "handshake_timeout");
        check_err("handshake_timeout = 0", "handshake_timeout");
        check_err("log_level = \"loud\"", "log_level");
        check_err(
            "[[listeners]]\nurl = \"udp://1.2.3.4:5\"",
            "unsupported scheme",
        );
        check_err("[[listeners]]\nurl = \"tcp://host\"", "numeric port");
        check_err("[[listeners]]\nurl = \"tcp://h:1\"\ncolour = 1", "colour");
        check_err("listeners = []", "listeners");
        check_err("handshake_timeout = 1e19", "handshake_timeout");
        check_err("association_ttl = 31536001", "association_ttl");
        check_err("max_associations = 0", "max_associations");
        check_err("max_threads = 3", "max_threads");
        check_err("max_associations = -3", "max_associations");
        check_err(
            "[[listeners]]\nurl = \"tls://h:1\"",
            "needs both cert and key",
        );
        check_err(
            "[[listeners]]\nurl = \"tls://h:1\"\ncert = \"c.pem\"",
            "needs both cert and key",
        );
        check_err(
            "[[listeners]]\nurl = \"tcp://h:1\"\ncert = \"c.pem\"\nkey = \"k.pem\"",
            "for tls:// listeners",
        );
    }

    #[test]
    fn a_proxy_protocol_listener_needs_trusted_proxies() {
        let listener = "[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\nproxy_protocol = true\n";
        check_err(listener, "trusted_proxies is empty");
        check_err(listener, "listeners[0] (tcp://127.0.0.1:0)");
        check_err("trusted_proxies = [\"10.0.0.300/8\"]", "trusted_proxies");
        let config = Config::from_toml(&format!(
            "trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n{listener}"
        ))
        .unwrap();
        assert!(config.listeners[0].proxy_protocol);
        assert!(config
            .trusted_proxies
            .contains("127.0.0.1".parse().unwrap()));
        assert!(!config
            .trusted_proxies
            .contains("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn the_external_url_scheme_decides_the_gathered_transports() {
        use Transport::{Tcp, Tls, Ws, Wss};
        let tcp = ListenUrl::parse("tcp://127.0.0.1:0").unwrap();
        let tls = ListenUrl::parse("tls://127.0.0.1:0").unwrap();
        assert_eq!(advertised_transports(&tcp, None), [Tcp, Ws]);
        assert_eq!(advertised_transports(&tls, None), [Tls, Wss]);
        assert_eq!(
            advertised_transports(&tcp, Some("tcp://lb:7001")),
            [Tcp, Ws]
        );
        // An HTTP balancer in front: no tcp:// candidate it could not route.
        assert_eq!(advertised_transports(&tcp, Some("ws://lb:80")), [Ws]);
        // TLS ended at the balancer, plain to the relay.
        assert_eq!(advertised_transports(&tcp, Some("wss://lb:443")), [Wss]);
        assert_eq!(
            advertised_transports(&tcp, Some("tls://lb:8443")),
            [Tls, Wss]
        );
        let with =
            |url: &str| format!("[[listeners]]\nurl = \"tcp://h:1\"\nexternal_url = \"{url}\"");
        check_err(&with("http://lb:80"), "must look like tcp://HOST:PORT");
        check_err(&with("lb:80"), "must look like tcp://HOST:PORT");
        check_err(&with("ws://"), "must look like tcp://HOST:PORT");
        Config::from_toml(&with("wss://lb.example.net:443")).unwrap();
    }

    #[test]
    fn tls_listeners_take_cert_and_key_relative_to_the_config_file() {
        let folder = std::env::temp_dir().join(format!("jet-relay-config-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("relay.toml");
        std::fs::write(
            &file,
            "[[listeners]]\nurl = \"tls://127.0.0.1:0\"\ncert = \"certs/server.pem\"\nkey = \"/abs/key.pem\"\n",
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        let listener = &config.listeners[0];
        assert_eq!(listener.url.scheme, Transport::Tls);
        assert_eq!(listener.url.to_string(), "tls://127.0.0.1:0");
        assert_eq!(
            listener.cert.as_deref(),
            Some(&*folder.join("certs/server.pem"))
        );
        assert_eq!(listener.key.as_deref(), Some(Path::new("/abs/key.pem")));
        assert_eq!(listener.url.transports(), [Transport::Tls, Transport::Wss]);
    }

    #[test]
    fn api_key_is_masked_and_compared_exactly() {
        let config = Config::from_toml("api_key = \"0123456789abcdef-secret\"").unwrap();
        let key = config.api_key.as_ref().unwrap();
        assert!(!format!("{config:?}").contains("secret"));
        assert!(key.matches(b"0123456789abcdef-secret"));
        assert!(!key.matches(b"0123456789abcdef-secreT"));
        assert!(!key.matches(b"0123456789abcdef-secret2"));
        assert!(!key.matches(b""));
        assert!(config.accept_requires_api());
        check_err("api_key = \"short\"", "api_key");
        let open =
            Config::from_toml("api_key = \"0123456789abcdef-secret\"\naccept_requires_api = false")
                .unwrap();
        assert!(!open.accept_requires_api());
        assert!(!Config::default().accept_requires_api());
    }

    /// The keys serde takes in `text`'s table, read from the unknown-field
    /// error that `deny_unknown_fields` gives for a key that cannot exist.
    fn keys_of(text: &str) -> Vec<String> {
        let err = toml::from_str::<Config>(text).unwrap_err().to_string();
        let (_, list) = err
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("no key list in {err:?}"));
        let list = list.lines().next().unwrap_or_default();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    /// The line of `text` that sets `key` or shows it commented out (`# key = `),
    /// matching the whole key at the start of the line.
    fn key_line<'t>(text: &'t str, key: &str) -> &'t str {
        let prefix = format!("{key} = ");
        text.lines()
            .find(|l| l.strip_prefix("# ").unwrap_or(l).starts_with(&prefix))
            .unwrap_or_else(|| panic!("relay.toml neither sets nor shows {key:?}"))
    }

    #[test]
    fn shipped_relay_toml_parses_and_shows_every_key_with_a_valid_example() {
        let text = include_str!("../../relay.toml");
        let shipped = Config::from_toml(text).unwrap();
        assert_eq!(shipped.listeners[0].url.to_string(), "tcp://127.0.0.1:8080");
        let top = keys_of("zzz_not_a_key = 1");
        let listener = keys_of("[[listeners]]\nurl = \"tcp://127.0.0.1:1\"\nzzz_not_a_key = 1");
        // A list read from an error message could come back empty and check nothing.
        assert!(top.len() >= 13, "top-level keys: {top:?}");
        assert_eq!(
            listener,
            [
                "url",
                "external_url",
                "cert",
                "key",
                "reuse_port",
                "proxy_protocol"
            ]
        );
        for key in top.iter().filter(|k| *k != "listeners") {
            let line = key_line(text, key);
            if let Some(example) = line.strip_prefix("# ") {
                // The commented example is valid as it stands.
                let edited = text.replacen(line, example, 1);
                let config = Config::from_toml(&edited)
                    .unwrap_or_else(|e| panic!("relay.toml with `{example}`: {e}"));
                assert_ne!(
                    format!("{config:?}"),
                    format!("{shipped:?}"),
                    "{example} changes nothing"
                );
            }
        }
        // Listener keys: the first listener sets url and shows external_url;
        // the commented TLS listener shows cert and key, valid as a whole block.
        let tls_block = &text[text
            .find("# [[listeners]]")
            .expect("a commented TLS listener")..];
        let uncommented: String = tls_block
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let with_tls = Config::from_toml(&text.replacen(tls_block, &uncommented, 1)).unwrap();
        assert_eq!(with_tls.listeners.len(), 2);
        for key in &listener {
            let line = key_line(text, key);
            let example = line.strip_prefix("# ").unwrap_or(line);
            let in_tls_block = tls_block.contains(line);
            if line.starts_with("# ") && !in_tls_block {
                let mut edited = text.replacen(line, example, 1);
                if key == "proxy_protocol" {
                    // Valid only with a trusted proxy, which the file shows too.
                    let trusted = key_line(text, "trusted_proxies");
                    edited = edited.replacen(trusted, &trusted[2..], 1);
                }
                Config::from_toml(&edited)
                    .unwrap_or_else(|e| panic!("relay.toml with `{example}`: {e}"));
            }
            assert!(line.starts_with("# ") || !in_tls_block, "{key}");
        }
    }
}
