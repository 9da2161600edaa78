//! The relay's configuration: `relay.toml`, parsed and validated before anything starts.

use crate::error::{Error, Result};
use crate::log::Level;
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
    /// Per-client limits (the `[client_limits]` table); only the REST rate is enforced so far.
    pub client_limits: LimitsConfig,
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
            max_associations: crate::relay::table::DEFAULT_MAX_ASSOCIATIONS,
            max_threads: 0,
            listeners: vec![ListenerConfig::new(
                ListenUrl::parse("tcp://127.0.0.1:8080").expect("the default URL is valid"),
            )],
            listen_backlog: crate::relay::socket::DEFAULT_BACKLOG,
            api_key: None,
            accept_requires_api: None,
            cors_origin: None,
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
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file; errors name the file. Relative
    /// certificate, key and token key paths are made relative to the file's folder.
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
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(url) = &listener.external_url {
                if ListenUrl::parse(url).is_err() && url.split_once("://").is_none() {
                    return Err(Error::Config(format!(
                        "listeners[{i}].external_url {url:?} must look like tcp://HOST:PORT"
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
    fn token_keys_are_relative_to_the_config_file_and_need_keys_to_be_required() {
        let folder = std::env::temp_dir().join(format!("jet-relay-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("relay.toml");
        std::fs::write(
            &file,
            "token_keys = [\"keys/a.pem\", \"/abs/b.pem\"]\ntoken_leeway = 5\nrequire_jet_tokens = true\n",
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        assert_eq!(
            config.token_keys,
            [folder.join("keys/a.pem"), PathBuf::from("/abs/b.pem")]
        );
        assert_eq!(config.token_leeway, Duration::from_secs(5));
        assert!(config.tokens_configured() && config.accept_requires_api());
        check_err(
            "require_jet_tokens = true",
            "require_jet_tokens needs token_keys",
        );
        check_err("token_leeway = -1", "token_leeway");
        check_err("[client_limits]\nrest_rat = 1", "rest_rat");
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
            ["url", "external_url", "cert", "key", "reuse_port"]
        );
        for key in top
            .iter()
            .filter(|k| *k != "listeners" && *k != "client_limits")
        {
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
        // [client_limits]: every key shown, with its default, valid as a block.
        let limits_block = &text[text
            .find("# [client_limits]")
            .expect("a commented [client_limits] table")..];
        let limits_block = &limits_block[..limits_block.find("\n\n").unwrap_or(limits_block.len())];
        let limits_keys = keys_of("[client_limits]\nzzz_not_a_key = 1");
        assert!(
            limits_keys.len() >= 7,
            "client_limits keys: {limits_keys:?}"
        );
        for key in &limits_keys {
            assert!(
                limits_block.contains(&format!("# {key} = ")),
                "[client_limits] does not show {key}"
            );
        }
        let uncommented: String = limits_block
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let with_limits = Config::from_toml(&text.replacen(limits_block, &uncommented, 1))
            .unwrap_or_else(|e| panic!("relay.toml with [client_limits]: {e}"));
        assert_eq!(with_limits.client_limits, LimitsConfig::default());
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
                let edited = text.replacen(line, example, 1);
                Config::from_toml(&edited)
                    .unwrap_or_else(|e| panic!("relay.toml with `{example}`: {e}"));
            }
            assert!(line.starts_with("# ") || !in_tls_block, "{key}");
        }
    }
}
