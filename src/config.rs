//! The relay's configuration: `relay.toml`, parsed and validated before anything starts.

use crate::error::{Error, Result};
use crate::log::Level;
use serde::{Deserialize, Deserializer};
use std::path::Path;
use std::time::Duration;

/// Handshake timeout when the file does not set one.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an association waits to be selected when the file does not say.
pub const DEFAULT_ASSOCIATION_TTL: Duration = Duration::from_secs(300);
/// How long an ended association stays visible when the file does not say.
pub const DEFAULT_ENDED_RETENTION: Duration = Duration::from_secs(10);

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
    /// Relay plain TCP pairs with splice(2) through a kernel pipe (Linux);
    /// false forces the portable read/write copy for every pair. TLS and
    /// WebSocket pairs always copy through user space.
    pub zero_copy: bool,
    /// Where the relay listens.
    pub listeners: Vec<ListenerConfig>,
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `tcp://HOST:PORT`; port 0 picks a free port.
    #[serde(deserialize_with = "listen_url")]
    pub url: ListenUrl,
    /// The URL peers use to reach this listener from outside (behind NAT or a
    /// load balancer); gathered candidates are built from it.
    #[serde(default)]
    pub external_url: Option<String>,
}

/// A parsed listener URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    /// The scheme; only `tcp` for now.
    pub scheme: Scheme,
    /// `HOST:PORT` as written, resolved when binding.
    pub address: String,
}

/// Transports a listener can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP: JET packets, HTTP and WebSocket upgrades.
    Tcp,
}

impl ListenUrl {
    /// Parses `tcp://HOST:PORT`.
    pub fn parse(text: &str) -> std::result::Result<ListenUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not a URL like tcp://127.0.0.1:8080"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            other => return Err(format!("{text:?}: unsupported scheme {other:?} (use tcp)")),
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
        let scheme = match self.scheme {
            Scheme::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.address)
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
            zero_copy: true,
            listeners: vec![ListenerConfig {
                url: ListenUrl::parse("tcp://127.0.0.1:8080").expect("the default URL is valid"),
                external_url: None,
            }],
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

    /// Reads and parses a configuration file; errors name the file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Config::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
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
        if self.listeners.is_empty() {
            return Err(Error::Config(
                "listeners: at least one listener is needed".into(),
            ));
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
    }

    #[test]
    fn shipped_relay_toml_parses_and_sets_every_key() {
        let text = include_str!("../relay.toml");
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.listeners[0].url.to_string(), "tcp://127.0.0.1:8080");
        for key in [
            "instance",
            "log_level",
            "handshake_timeout",
            "association_ttl",
            "idle_timeout",
            "ended_retention",
            "zero_copy",
            "[[listeners]]",
            "url",
        ] {
            assert!(text.contains(key), "relay.toml should show {key}");
        }
    }
}
