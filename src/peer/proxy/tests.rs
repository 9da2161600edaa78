//! Proxy URLs, their masking, and the choice of proxy from the environment.

use super::*;
use std::collections::HashMap;

fn addr(host: &str, port: u16) -> ProxyAddr {
    ProxyAddr {
        host: host.into(),
        port,
    }
}

fn creds(user: &str, pass: &str) -> Option<(String, String)> {
    Some((user.into(), pass.into()))
}

#[track_caller]
fn parses(url: &str, want: Proxy) {
    assert_eq!(Proxy::parse(url), Ok(want), "{url:?}");
}

#[track_caller]
fn rejects(url: &str, why: &str) {
    match Proxy::parse(url) {
        Ok(p) => panic!("{url:?} parsed as {p:?}"),
        Err(e) => assert!(e.to_string().contains(why), "{url:?}: {e} lacks {why:?}"),
    }
}

#[test]
fn proxy_url_parsing_table() {
    use Proxy::{Http, Socks5};
    parses(
        "http://proxy.corp:3128",
        Http {
            addr: addr("proxy.corp", 3128),
            auth: None,
        },
    );
    parses(
        "HTTP://Proxy.corp:3128/",
        Http {
            addr: addr("Proxy.corp", 3128),
            auth: None,
        },
    );
    parses(
        "proxy.corp:8080",
        Http {
            addr: addr("proxy.corp", 8080),
            auth: None,
        },
    );
    parses(
        "http://proxy.corp",
        Http {
            addr: addr("proxy.corp", 80),
            auth: None,
        },
    );
    parses(
        "  http://10.0.0.1:3128  ",
        Http {
            addr: addr("10.0.0.1", 3128),
            auth: None,
        },
    );
    parses(
        "http://[::1]:3128",
        Http {
            addr: addr("::1", 3128),
            auth: None,
        },
    );
    parses(
        "http://[fd00::7]",
        Http {
            addr: addr("fd00::7", 80),
            auth: None,
        },
    );
    parses(
        "http://alice:s3cret@proxy:3128",
        Http {
            addr: addr("proxy", 3128),
            auth: creds("alice", "s3cret"),
        },
    );
    parses(
        "http://alice@proxy:3128",
        Http {
            addr: addr("proxy", 3128),
            auth: creds("alice", ""),
        },
    );
    parses(
        "http://al%69ce:p%40ss%3Aw%25rd@proxy:3128",
        Http {
            addr: addr("proxy", 3128),
            auth: creds("alice", "p@ss:w%rd"),
        },
    );
    parses(
        "http://bob:p@ss@proxy:3128",
        Http {
            addr: addr("proxy", 3128),
            auth: creds("bob", "p@ss"),
        },
    );
    parses(
        "http://j%C3%B6rg:x@proxy:1",
        Http {
            addr: addr("proxy", 1),
            auth: creds("jörg", "x"),
        },
    );
    parses(
        "socks5://127.0.0.1:1080",
        Socks5 {
            addr: addr("127.0.0.1", 1080),
            auth: None,
        },
    );
    parses(
        "socks5h://socks.corp",
        Socks5 {
            addr: addr("socks.corp", 1080),
            auth: None,
        },
    );
    parses(
        "SOCKS5://u:p@socks.corp:9050",
        Socks5 {
            addr: addr("socks.corp", 9050),
            auth: creds("u", "p"),
        },
    );

    rejects("https://proxy:443", "(https://) is not supported");
    rejects("socks4://proxy:1080", "unsupported scheme \"socks4\"");
    rejects("ftp://proxy:21", "unsupported scheme");
    rejects("http://proxy:0", "port 0");
    rejects("http://proxy:65536", "above 65535");
    rejects("http://proxy:99999999999", "above 65535");
    rejects("http://proxy:", "\"\" is not a port number");
    rejects("http://proxy:-1", "not a port number");
    rejects("http://proxy:http", "not a port number");
    rejects("http://proxy:31 28", "not a port number");
    rejects("http://", "the host is empty");
    rejects("http://:3128", "the host is empty");
    rejects("http://::1:3128", "brackets");
    rejects("http://[::1:3128", "unclosed");
    rejects("http://[proxy]:3128", "not an IPv6 address");
    rejects("http://[::1]3128", "expected ':PORT'");
    rejects("http://pro xy:3128", "not a host name");
    rejects("http://proxy:3128/path", "no path");
    rejects("http://proxy:3128?x=1", "no path, query");
    rejects("http://u:%zz@proxy:3128", "password: bad percent escape");
    rejects("http://u%4@proxy:3128", "user name: bad percent escape");
    rejects("http://u:%ff@proxy:3128", "not UTF-8");
    rejects("socks5://:pw@proxy:1080", "1 to 255 bytes");
    let long = "x".repeat(256);
    rejects(&format!("socks5://{long}:pw@proxy:1080"), "1 to 255 bytes");
    rejects(
        &format!("socks5://u:{long}@proxy:1080"),
        "at most 255 bytes",
    );
}

#[test]
fn credentials_never_show_in_debug_display_or_errors() {
    let proxy = Proxy::parse("http://alice:hunter2@proxy:3128").expect("a valid URL");
    let debug = format!("{proxy:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("alice") && debug.contains("***"), "{debug}");
    assert_eq!(proxy.to_string(), "http://proxy:3128");
    let socks = Proxy::parse("socks5h://u:hunter2@[::1]:9050").expect("a valid URL");
    assert_eq!(socks.to_string(), "socks5://[::1]:9050");
    assert!(!format!("{socks:?}").contains("hunter2"));
    let err = Proxy::parse("http://alice:hunter2@proxy:0").expect_err("port 0");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("***@proxy:0"), "{err}");
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// The proxy chosen for `scheme://host:port`, as its display form.
#[track_caller]
fn selects(settings: &ProxySettings, scheme: &str, host: &str, port: u16, want: Option<&str>) {
    let got = proxy_for(settings, scheme, host, port).map(|p| p.to_string());
    assert_eq!(
        got.as_deref(),
        want,
        "{scheme}://{host}:{port} with {settings:?}"
    );
}

#[test]
fn environment_selection_table() {
    let all = [
        ("https_proxy", "http://https-lower:1"),
        ("HTTPS_PROXY", "http://https-upper:1"),
        ("http_proxy", "http://http-lower:1"),
        ("HTTP_PROXY", "http://http-upper:1"),
        ("all_proxy", "socks5://all-lower:1"),
        ("ALL_PROXY", "socks5://all-upper:1"),
    ];
    let s = ProxySettings::from_env(env(&all)).expect("valid variables");
    selects(&s, "tls", "relay", 443, Some("http://https-lower:1"));
    selects(&s, "WSS", "relay", 443, Some("http://https-lower:1"));
    selects(&s, "ws", "relay", 80, Some("http://http-lower:1"));
    selects(&s, "tcp", "relay", 9000, Some("socks5://all-lower:1"));
    selects(&s, "quic", "relay", 9000, Some("socks5://all-lower:1"));

    // Uppercase counts when the lowercase name is unset (or empty) ...
    let s = ProxySettings::from_env(env(&[
        ("https_proxy", " "),
        ("HTTPS_PROXY", "http://https-upper:1"),
        ("ALL_PROXY", "socks5://all-upper:1"),
    ]))
    .expect("valid variables");
    selects(&s, "tls", "relay", 443, Some("http://https-upper:1"));
    selects(&s, "tcp", "relay", 9000, Some("socks5://all-upper:1"));
    // ... except HTTP_PROXY, which a CGI request can set (httpoxy).
    let s = ProxySettings::from_env(env(&[("HTTP_PROXY", "http://http-upper:1")]))
        .expect("valid variables");
    selects(&s, "ws", "relay", 80, None);

    // ALL_PROXY backs up the scheme's own variable.
    let s = ProxySettings::from_env(env(&[("ALL_PROXY", "socks5://all:1")])).expect("valid");
    selects(&s, "wss", "relay", 443, Some("socks5://all:1"));
    selects(&s, "ws", "relay", 80, Some("socks5://all:1"));

    // http_proxy and https_proxy never apply to tcp:// (JET is not HTTP).
    let s = ProxySettings::from_env(env(&[
        ("http_proxy", "http://http:1"),
        ("https_proxy", "http://https:1"),
    ]))
    .expect("valid variables");
    selects(&s, "tcp", "relay", 9000, None);
    selects(&s, "tls", "relay", 443, Some("http://https:1"));

    // NO_PROXY (lowercase first) keeps matching hosts direct.
    let s = ProxySettings::from_env(env(&[
        ("ALL_PROXY", "socks5://all:1"),
        ("no_proxy", ".internal,10.0.0.0/8"),
        ("NO_PROXY", "*"),
    ]))
    .expect("valid variables");
    selects(&s, "tcp", "relay.internal", 9000, None);
    selects(&s, "tcp", "10.1.2.3", 9000, None);
    selects(&s, "tcp", "relay.example", 9000, Some("socks5://all:1"));

    // Nothing set: direct.
    let s = ProxySettings::from_env(env(&[])).expect("nothing to parse");
    selects(&s, "tls", "relay", 443, None);
}

#[test]
fn a_bad_variable_is_an_error_naming_it() {
    let err = ProxySettings::from_env(env(&[("HTTPS_PROXY", "ftp://u:pw@proxy:21")]))
        .expect_err("ftp is no proxy scheme");
    let text = err.to_string();
    assert!(text.contains("HTTPS_PROXY=ftp://***@proxy:21"), "{text}");
    assert!(text.contains("unsupported scheme"), "{text}");
}

#[test]
fn proxy_option_overrides_the_environment_and_no_proxy_disables_it() {
    let vars = env(&[
        ("https_proxy", "http://from-env:1"),
        ("ALL_PROXY", "ftp://broken"),
        ("NO_PROXY", "local.example"),
    ]);
    let s = ProxySettings::from_options(Some("socks5://cli:1080"), false, &vars)
        .expect("the explicit proxy is valid");
    for scheme in ["tcp", "tls", "ws", "wss"] {
        selects(&s, scheme, "relay.example", 443, Some("socks5://cli:1080"));
    }
    selects(&s, "tls", "relay.local.example", 443, None);

    let s = ProxySettings::from_options(None, true, &vars).expect("--no-proxy reads nothing");
    assert_eq!(s, ProxySettings::direct());
    for scheme in ["tcp", "tls", "ws", "wss"] {
        selects(&s, scheme, "relay.example", 443, None);
    }

    let err =
        ProxySettings::from_options(Some("http://u:pw@cli:0"), false, &vars).expect_err("port 0");
    assert!(
        err.to_string().contains("--proxy http://***@cli:0"),
        "{err}"
    );
    // Without --proxy the broken ALL_PROXY is reported.
    let err = ProxySettings::from_options(None, false, &vars).expect_err("ALL_PROXY is broken");
    assert!(err.to_string().contains("ALL_PROXY"), "{err}");
}
