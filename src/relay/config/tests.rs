//! Parsing, validation and messages of relay.toml, and the shipped file itself.

use super::*;

/// Words of serde's internals that mean nothing to the person editing the file.
const SERDE_JARGON: [&str; 5] = [
    "untagged",
    "variant",
    "data did not match",
    "usize",
    "sequence",
];

#[track_caller]
fn check_err(text: &str, needle: &str) {
    let err = Config::from_toml(text).unwrap_err().to_string();
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    for word in SERDE_JARGON {
        assert!(!err.contains(word), "{err:?} speaks serde ({word:?})");
    }
    assert_eq!(err.matches("configuration:").count(), 1, "{err:?}");
}

#[test]
fn messages_say_what_to_change_in_words_a_person_reads() {
    for (text, expected) in [
        (
            "handshake_timeout = \"soon\"",
            "line 1: `handshake_timeout = \"soon\"`: invalid type: string \"soon\", expected a number of seconds, like 10 or 0.5",
        ),
        ("idle_timeout = true", "expected a number of seconds"),
        ("\n\nassociation_ttl = [1]", "line 3: `association_ttl = [1]`"),
        ("max_associations = \"many\"", "expected a whole number"),
        ("max_threads = 2.5", "expected a whole number"),
        ("zero_copy = \"yes\"", "expected true or false"),
        ("listeners = \"tcp://h:1\"", "expected a list"),
        (
            "[[listeners]]\nurl = \"tcp://127.0.0.1:99999\"",
            "port 99999 is out of range (0 to 65535)",
        ),
        (
            "[[listeners]]\nurl = \"tcp://127.0.0.1:123456789012345678901234\"",
            "is out of range",
        ),
        ("[[listeners]]\nurl = \"tcp://::1:80\"", "IPv6 host goes in brackets"),
        ("[[listeners]]\nurl = \"tcp://[::1:80\"", "IPv6 host goes in brackets"),
        (
            "[[listeners]]\nurl = \"tcp://127.0.0.1:8080\"\n[[listeners]]\nurl = \"tcp://127.0.0.1:8080\"",
            "listeners: tcp://127.0.0.1:8080 is listed twice",
        ),
        (
            "[[listeners]]\nurl = \"tcp://127.0.0.1:8080\"\n[[listeners]]\nurl = \"tls://127.0.0.1:8080\"\ncert = \"c\"\nkey = \"k\"",
            "tcp://127.0.0.1:8080 and tls://127.0.0.1:8080 cannot both bind 127.0.0.1:8080",
        ),
        ("handshake_timout = 3", "unknown field `handshake_timout`"),
        (
            "metrics_listen = \"127.0.0.1:99999\"",
            "metrics_listen: \"127.0.0.1:99999\": port 99999 is out of range",
        ),
        ("metrics_listen = \"9100\"", "metrics_listen: \"9100\" needs a host and a numeric port"),
        (
            "metrics_listen = \"127.0.0.1:8080\"",
            "metrics_listen 127.0.0.1:8080 is also the address of listener tcp://127.0.0.1:8080",
        ),
        (
            "metrics_token = \"short\"",
            "line 1: `metrics_token = ***`: metrics_token must be at least 16 characters",
        ),
        (
            "api_key = \"short-secret\"",
            "line 1: `api_key = ***`: api_key must be at least 16 characters",
        ),
    ] {
        check_err(text, expected);
    }
    let err = Config::from_toml("api_key = \"short-secret\"")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("short-secret"), "a secret repeated: {err}");
}

#[test]
fn listeners_on_port_zero_may_repeat() {
    let config = Config::from_toml(
        "[[listeners]]\nurl = \"tcp://127.0.0.1:0\"\n[[listeners]]\nurl = \"tcp://127.0.0.1:0\"",
    )
    .unwrap();
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn a_file_error_has_one_configuration_prefix_and_names_the_file() {
    let folder = std::env::temp_dir().join(format!("jet-relay-config-err-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("relay.toml");
    std::fs::write(&file, "max_threads = 3\n").unwrap();
    let err = Config::load(&file).unwrap_err().to_string();
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(
        err,
        format!(
            "configuration: {}: max_threads must be 0 (derived from the kernel) or at least 16",
            file.display()
        )
    );
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
    let with = |url: &str| format!("[[listeners]]\nurl = \"tcp://h:1\"\nexternal_url = \"{url}\"");
    check_err(&with("http://lb:80"), "must look like tcp://HOST:PORT");
    check_err(&with("lb:80"), "must look like tcp://HOST:PORT");
    check_err(&with("ws://"), "must look like tcp://HOST:PORT");
    Config::from_toml(&with("wss://lb.example.net:443")).unwrap();
}

#[test]
fn shipped_relay_toml_parses_and_shows_every_key_with_a_valid_example() {
    let text = include_str!("../../../relay.toml");
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
