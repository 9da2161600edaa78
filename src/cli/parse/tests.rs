//! The parser's table: argv in, the `Command` or the mistake out.

use super::parse;
use crate::cli::args::*;
use crate::cli::usage::Topic;
use jet_relay::peer::negotiate;
use jet_relay::relay::config::ListenUrl;
use jet_relay::wire::{CandidateUrl, Transport};
use std::ffi::OsString;
use std::time::Duration;

const A: &str = "6f2c2b8e-2a4b-4f55-9d0a-6d1f0c3b7a10";
const C: &str = "0b7e3d1c-8f4e-4c2a-a1d9-3e5f6a7b8c90";

fn ids() -> Ids {
    Ids {
        association: A.parse().unwrap(),
        candidate: C.parse().unwrap(),
    }
}

fn url(text: &str) -> CandidateUrl {
    CandidateUrl::parse(text).unwrap()
}

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[track_caller]
fn check(args: &[&str], expected: Command) {
    assert_eq!(parse(argv(args)), Ok(expected), "for {args:?}");
}

/// A mistake: exit 2, explained by `topic`'s usage, with `needle` in the message.
#[track_caller]
fn check_error(args: &[&str], topic: Topic, needle: &str) {
    match parse(argv(args)) {
        Err(e) => {
            assert_eq!(e.topic, topic, "for {args:?}: {e:?}");
            assert!(e.message.contains(needle), "for {args:?}: {e:?}");
            assert!(!e.message.contains("configuration"), "for {args:?}: {e:?}");
        }
        Ok(command) => panic!("{args:?} parsed as {command:?}"),
    }
}

#[test]
fn the_relay_is_the_default_and_takes_config_and_listen() {
    check(&[], Command::Relay(RelayArgs::default()));
    let listen = |text: &str| ListenUrl::parse(text).unwrap();
    check(
        &[
            "--config",
            "a.toml",
            "--listen=tcp://127.0.0.1:0",
            "--listen",
            "tls://[::1]:8443",
        ],
        Command::Relay(RelayArgs {
            config: Some("a.toml".into()),
            listen: vec![listen("tcp://127.0.0.1:0"), listen("tls://[::1]:8443")],
        }),
    );
    check(
        &["relay", "--config=b.toml"],
        Command::Relay(RelayArgs {
            config: Some("b.toml".into()),
            listen: vec![],
        }),
    );
    check_error(&["--listen", "udp://x:1"], Topic::Overview, "--listen");
    check_error(&["--listen"], Topic::Overview, "missing argument");
    check_error(&["--frobnicate"], Topic::Overview, "--frobnicate");
    check_error(&["frobnicate"], Topic::Overview, "unknown subcommand");
}

#[test]
fn help_and_version_wherever_they_are_asked_for() {
    check(&["--help"], Command::Help(Topic::Overview));
    check(&["-h"], Command::Help(Topic::Overview));
    check(&["help"], Command::Help(Topic::Overview));
    check(&["--version"], Command::Version);
    check(&["-V"], Command::Version);
    check(&["relay", "--help"], Command::Help(Topic::Relay));
    for (name, topic) in [
        ("accept", Topic::Accept),
        ("connect", Topic::Connect),
        ("test", Topic::Test),
        ("offer", Topic::Offer),
        ("answer", Topic::Answer),
    ] {
        check(&[name, "--help"], Command::Help(topic));
        check(&[name, "-h"], Command::Help(topic));
        check(&["help", name], Command::Help(topic));
        // Help wins over missing arguments that come after it.
        check(&[name, "--insecure", "-h"], Command::Help(topic));
    }
    check_error(&["help", "frob"], Topic::Overview, "unknown subcommand");
    check_error(
        &["help", "accept", "connect"],
        Topic::Overview,
        "at most one",
    );
}

#[test]
fn accept_and_connect_take_ids_or_v1() {
    check(
        &["accept", "tcp://r:1", A, C],
        Command::Accept(AcceptArgs {
            url: url("tcp://r:1"),
            ids: Some(ids()),
            peer: PeerOptions::default(),
            jmux: None,
            rest: Rest::default(),
        }),
    );
    check(
        &[
            "accept",
            "--v1",
            "tls://r:1",
            "--ca=ca.pem",
            "--forward",
            "127.0.0.1:22",
        ],
        Command::Accept(AcceptArgs {
            url: url("tls://r:1"),
            ids: None,
            peer: PeerOptions {
                local: LocalSide::Forward("127.0.0.1:22".into()),
                tls: Tls {
                    ca: Some("ca.pem".into()),
                    insecure: false,
                },
                proxy: ProxyChoice::default(),
            },
            jmux: None,
            rest: Rest::default(),
        }),
    );
    check(
        &[
            "connect",
            "ws://r",
            A,
            C,
            "--listen=127.0.0.1:0",
            "--insecure",
        ],
        Command::Connect(ConnectArgs {
            url: url("ws://r"),
            target: ConnectTarget::V2(ids()),
            peer: PeerOptions {
                local: LocalSide::Listen("127.0.0.1:0".into()),
                tls: Tls {
                    ca: None,
                    insecure: true,
                },
                proxy: ProxyChoice::default(),
            },
            jmux: None,
            rest: Rest::default(),
        }),
    );
    check(
        &["connect", "--v1", "--association", A, "r:1"],
        Command::Connect(ConnectArgs {
            url: url("tcp://r:1"),
            target: ConnectTarget::V1 {
                association: A.parse().unwrap(),
            },
            peer: PeerOptions::default(),
            jmux: None,
            rest: Rest::default(),
        }),
    );
    check_error(
        &["accept", "-x"],
        Topic::Accept,
        "accept: unknown option -x",
    );
    check_error(
        &["accept", "tcp://r:1", A],
        Topic::Accept,
        "URL ASSOCIATION CANDIDATE",
    );
    check_error(
        &["accept", "gopher://x:1", A, C],
        Topic::Accept,
        "unsupported scheme",
    );
    check_error(
        &["accept", "tcp://r:1", "x", C],
        Topic::Accept,
        "association \"x\" is not a UUID",
    );
    check_error(
        &["accept", "--v1", "ws://r"],
        Topic::Accept,
        "no WebSocket form",
    );
    check_error(&["accept", "--v1", "r:1", A], Topic::Accept, "just URL");
    check_error(
        &["accept", "--association", A],
        Topic::Accept,
        "--association",
    );
    check_error(&["accept", "--insecure=yes"], Topic::Accept, "--insecure");
    check_error(
        &["accept", "r:1", A, C, "--listen", "a:1", "--forward", "b:2"],
        Topic::Accept,
        "cannot be used together",
    );
    check_error(
        &["connect", "--v1", "r:1"],
        Topic::Connect,
        "--association ID",
    );
    check_error(
        &["connect", "r:1", A, C, "--association", A],
        Topic::Connect,
        "goes with --v1",
    );
    check_error(
        &["connect", "r:1", A, C, "--timeout", "3"],
        Topic::Connect,
        "--timeout",
    );
}

#[test]
fn test_takes_only_the_candidate_and_tls_options() {
    check(
        &["test", "wss://r", A, C, "--insecure"],
        Command::Test(TestArgs {
            url: url("wss://r"),
            ids: ids(),
            tls: Tls {
                ca: None,
                insecure: true,
            },
            proxy: ProxyChoice::default(),
        }),
    );
    check_error(
        &["test", "r:1", A, C, "--forward", "a:1"],
        Topic::Test,
        "--forward",
    );
    check_error(&["test", "--v1", "r:1"], Topic::Test, "version 1");
    check_error(&["test", "r:1", "not-a-uuid", C], Topic::Test, "not-a-uuid");
}

#[test]
fn offer_and_answer_take_signals_and_their_own_options() {
    check(
        &[
            "offer",
            "--signal-in",
            "-",
            "--signal-out=out",
            "--association",
            A,
            "--transports",
            "tls, wss,bogus",
            "--timeout=2.5",
        ],
        Command::Offer(OfferArgs {
            signals: Signals {
                input: "-".into(),
                output: "out".into(),
            },
            association: Some(A.parse().unwrap()),
            transports: Some(vec![Transport::Tls, Transport::Wss]),
            peer: PeerOptions::default(),
            timeout: Duration::from_millis(2500),
        }),
    );
    check(
        &[
            "answer",
            "--signal-in=a",
            "--signal-out=b",
            "--relay",
            "tcp://r:1",
            "--gather=http://r:2",
            "--api-key",
            "k",
            "--listen",
            "127.0.0.1:0",
        ],
        Command::Answer(AnswerArgs {
            signals: Signals {
                input: "a".into(),
                output: "b".into(),
            },
            relays: vec![url("tcp://r:1")],
            gather: vec!["http://r:2".into()],
            api_key: Some(Secret("k".into())),
            host_listen: Some("0.0.0.0:0".into()),
            peer: PeerOptions {
                local: LocalSide::Listen("127.0.0.1:0".into()),
                tls: Tls::default(),
                proxy: ProxyChoice::default(),
            },
            timeout: negotiate::NEGOTIATION_TIMEOUT,
        }),
    );
    fn answer<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["answer", "--signal-in", "a", "--signal-out", "b"];
        args.extend_from_slice(extra);
        args
    }
    match parse(argv(&answer(&["--no-host-candidates"]))) {
        Ok(Command::Answer(args)) => assert_eq!(args.host_listen, None),
        other => panic!("{other:?}"),
    }
    check_error(
        &["offer", "--signal-in", "-"],
        Topic::Offer,
        "--signal-out PATH",
    );
    check_error(
        &answer(&["--transports", "tcp"]),
        Topic::Answer,
        "--transports",
    );
    check_error(
        &answer(&["--timeout", "0"]),
        Topic::Answer,
        "number of seconds",
    );
    check_error(
        &answer(&["--timeout", "soon"]),
        Topic::Answer,
        "number of seconds",
    );
    check_error(&answer(&["stray"]), Topic::Answer, "unexpected argument");
    check_error(
        &answer(&["--host-listen", "a:1", "--no-host-candidates"]),
        Topic::Answer,
        "contradict",
    );
    check_error(
        &answer(&["--relay", "udp://r:1"]),
        Topic::Answer,
        "unsupported scheme",
    );
    let offer = [
        "offer",
        "--signal-in",
        "a",
        "--signal-out",
        "b",
        "--transports",
        "x",
    ];
    check_error(&offer, Topic::Offer, "none of tcp");
}

#[test]
fn the_api_key_is_not_in_debug_output() {
    assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(..)");
}

#[test]
fn jmux_accept_allows_the_forward_target_and_each_allow() {
    check(
        &[
            "accept",
            "tcp://r:1",
            A,
            C,
            "--jmux",
            "--forward",
            "127.0.0.1:22",
            "--allow",
            "db:5432",
        ],
        Command::Accept(AcceptArgs {
            url: url("tcp://r:1"),
            ids: Some(ids()),
            peer: PeerOptions::default(),
            jmux: Some(JmuxServer {
                allow: vec!["127.0.0.1:22".into(), "db:5432".into()],
                allow_any: false,
            }),
            rest: Rest::default(),
        }),
    );
    check_error(
        &["accept", "tcp://r:1", A, C, "--jmux"],
        Topic::Accept,
        "--forward",
    );
    check_error(
        &["accept", "tcp://r:1", A, C, "--allow", "h:1"],
        Topic::Accept,
        "--jmux",
    );
    check_error(
        &["accept", "tcp://r:1", A, C, "--jmux", "--allow", "h"],
        Topic::Accept,
        "HOST:PORT",
    );
    check_error(
        &[
            "accept",
            "tcp://r:1",
            A,
            C,
            "--jmux",
            "--allow-any",
            "--listen",
            "a:1",
        ],
        Topic::Accept,
        "--listen is for connect",
    );
}

#[test]
fn jmux_connect_takes_listen_pairs_socks5_and_the_rest_options() {
    check(
        &[
            "connect",
            "wss://r",
            A,
            C,
            "--jmux",
            "--listen",
            "127.0.0.1:2222=127.0.0.1:22",
            "--listen=127.0.0.1:0=db:5432",
            "--socks5",
            "127.0.0.1:1080",
            "--api",
            "http://r:2",
            "--api-key",
            "k",
            "--proxy",
            "socks5://p:1080",
        ],
        Command::Connect(ConnectArgs {
            url: url("wss://r"),
            target: ConnectTarget::V2(ids()),
            peer: PeerOptions {
                local: LocalSide::Stdio,
                tls: Tls::default(),
                proxy: ProxyChoice {
                    url: Some("socks5://p:1080".into()),
                    none: false,
                },
            },
            jmux: Some(JmuxClient {
                listen: vec![
                    ("127.0.0.1:2222".into(), "127.0.0.1:22".into()),
                    ("127.0.0.1:0".into(), "db:5432".into()),
                ],
                socks5: vec!["127.0.0.1:1080".into()],
            }),
            rest: Rest {
                api: Some("http://r:2".into()),
                api_key: Some(Secret("k".into())),
            },
        }),
    );
    // The `=` form is JMUX only; plain mode keeps its single --listen.
    check_error(
        &["connect", "tcp://r:1", A, C, "--listen", "a:1=b:2"],
        Topic::Connect,
        "add --jmux",
    );
    check_error(
        &[
            "connect",
            "tcp://r:1",
            A,
            C,
            "--listen",
            "a:1",
            "--listen",
            "a:2",
        ],
        Topic::Connect,
        "only with --jmux",
    );
    check_error(
        &["connect", "tcp://r:1", A, C, "--jmux", "--listen", "a:1"],
        Topic::Connect,
        "ADDR=HOST:PORT",
    );
    check_error(
        &["connect", "tcp://r:1", A, C, "--socks5", "a:1"],
        Topic::Connect,
        "--jmux",
    );
    check_error(
        &["connect", "tcp://r:1", A, C, "--jmux"],
        Topic::Connect,
        "--socks5",
    );
    check_error(
        &["test", "tcp://r:1", A, C, "--proxy", "ftp://p:1"],
        Topic::Test,
        "--proxy",
    );
    check_error(
        &[
            "test",
            "tcp://r:1",
            A,
            C,
            "--proxy",
            "http://p:1",
            "--no-proxy",
        ],
        Topic::Test,
        "contradict",
    );
    check_error(
        &["connect", "tcp://r:1", A, C, "--api", "r:2"],
        Topic::Connect,
        "--api",
    );
}
