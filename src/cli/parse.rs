//! argv to a [`Command`], or a usage mistake that names the subcommand whose
//! `--help` explains it.
//!
//! Parsing is pure (no file, socket or environment is touched): every check
//! that can be made on the text alone is made here, so a wrong command line
//! exits 2 before anything is contacted. `lexopt` splits the arguments
//! (`--opt value`, `--opt=value`, `-h`); the `match` on each option's name is
//! the list of options a subcommand takes.

use crate::cli::args::{
    AcceptArgs, AnswerArgs, Command, ConnectArgs, ConnectTarget, Ids, JmuxClient, JmuxServer,
    LocalSide, OfferArgs, PeerOptions, ProxyChoice, RelayArgs, Rest, Secret, Signals, TestArgs,
    Tls, UsageError,
};
use crate::cli::usage::Topic;
use jet_relay::peer::negotiate;
use jet_relay::relay::config::ListenUrl;
use jet_relay::wire::signal::parse_transports;
use jet_relay::wire::CandidateUrl;
use jet_relay::Error;
use lexopt::Arg::{Long, Short, Value};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// Why parsing a subcommand stopped early.
enum Stop {
    /// `--help` or `-h`: print the subcommand's usage.
    Help,
    /// A mistake, described.
    Bad(String),
}

impl From<lexopt::Error> for Stop {
    fn from(e: lexopt::Error) -> Stop {
        Stop::Bad(e.to_string())
    }
}

type Parsed<T> = Result<T, Stop>;

fn bad<T>(text: impl Into<String>) -> Parsed<T> {
    Err(Stop::Bad(text.into()))
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<OsString>) -> Result<Command, UsageError> {
    let first = args.first().and_then(|a| a.to_str()).unwrap_or("");
    let (topic, rest) = match Topic::from_subcommand(first) {
        Some(topic) => (topic, args[1..].to_vec()),
        None if first == "help" => return parse_help(&args[1..]),
        None if !args.is_empty() && !first.starts_with('-') => {
            return Err(UsageError {
                topic: Topic::Overview,
                message: format!("unknown subcommand {:?}", args[0]),
            })
        }
        // Options only: the relay.
        None => (Topic::Overview, args),
    };
    let mut parser = lexopt::Parser::from_args(rest);
    let parsed = match topic {
        Topic::Overview | Topic::Relay => relay(&mut parser),
        Topic::Accept => accept(&mut parser).map(Command::Accept),
        Topic::Connect => connect(&mut parser).map(Command::Connect),
        Topic::Test => test(&mut parser).map(Command::Test),
        Topic::Offer => offer(&mut parser).map(Command::Offer),
        Topic::Answer => answer(&mut parser).map(Command::Answer),
    };
    match parsed {
        Ok(command) => Ok(command),
        Err(Stop::Help) => Ok(Command::Help(topic)),
        Err(Stop::Bad(text)) => Err(UsageError {
            topic,
            message: match topic.subcommand() {
                Some(name) => format!("{name}: {text}"),
                None => text,
            },
        }),
    }
}

/// `help [SUBCOMMAND]`.
fn parse_help(args: &[OsString]) -> Result<Command, UsageError> {
    match args {
        [] => Ok(Command::Help(Topic::Overview)),
        [name] => match name.to_str().and_then(Topic::from_subcommand) {
            Some(topic) => Ok(Command::Help(topic)),
            None => Err(UsageError {
                topic: Topic::Overview,
                message: format!("help: unknown subcommand {name:?}"),
            }),
        },
        _ => Err(UsageError {
            topic: Topic::Overview,
            message: "help takes at most one subcommand".into(),
        }),
    }
}

/// The relay: `[--config PATH] [--listen URL]...`; also where the top-level
/// `--help` and `--version` arrive.
fn relay(parser: &mut lexopt::Parser) -> Parsed<Command> {
    let mut args = RelayArgs::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") => args.config = Some(PathBuf::from(parser.value()?)),
            Long("listen") => {
                let text = string(parser.value()?)?;
                match ListenUrl::parse(&text) {
                    Ok(url) => args.listen.push(url),
                    Err(e) => return bad(format!("--listen: {e}")),
                }
            }
            Long("version") | Short('V') => return Ok(Command::Version),
            other => return Err(help_or_unknown(&name(other))),
        }
    }
    Ok(Command::Relay(args))
}

fn accept(parser: &mut lexopt::Parser) -> Parsed<AcceptArgs> {
    let mut peer = PeerParser::default();
    let mut v1 = false;
    let mut jmux = false;
    let mut server = JmuxServer::default();
    let mut rest = Rest::default();
    let mut positional = Vec::new();
    while let Some(option) = next_option(parser, &mut positional)? {
        match option.as_str() {
            "--v1" => v1 = true,
            "--jmux" => jmux = true,
            "--allow" => server.allow.push(host_port("--allow", parser.value()?)?),
            "--allow-any" => server.allow_any = true,
            _ => {
                if !rest.option(&option, parser)? {
                    peer.option(&option, parser)?;
                }
            }
        }
    }
    let jmux = if jmux {
        if v1 {
            return bad("--jmux needs version 2 ids: URL ASSOCIATION CANDIDATE");
        }
        if !peer.listen.is_empty() {
            return bad("accept --jmux takes --forward and --allow; --listen is for connect");
        }
        if let Some(target) = peer.forward.take() {
            server
                .allow
                .insert(0, host_port_text("--forward", &target)?);
        }
        if server.allow.is_empty() && !server.allow_any {
            return bad("--jmux needs a destination: --forward HOST:PORT or --allow HOST:PORT");
        }
        Some(server)
    } else if !server.allow.is_empty() || server.allow_any {
        return bad("--allow and --allow-any go with --jmux");
    } else {
        None
    };
    let peer = peer.finish()?;
    if v1 {
        let [url] = positional.as_slice() else {
            return bad("--v1 needs just URL");
        };
        let url = v1_url(url)?;
        return Ok(AcceptArgs {
            url,
            ids: None,
            peer,
            jmux,
            rest,
        });
    }
    let (url, ids) = target(&positional)?;
    Ok(AcceptArgs {
        url,
        ids: Some(ids),
        peer,
        jmux,
        rest,
    })
}

fn connect(parser: &mut lexopt::Parser) -> Parsed<ConnectArgs> {
    let mut peer = PeerParser::default();
    let mut v1 = false;
    let mut jmux = false;
    let mut socks5 = Vec::new();
    let mut rest = Rest::default();
    let mut association = None;
    let mut positional = Vec::new();
    while let Some(option) = next_option(parser, &mut positional)? {
        match option.as_str() {
            "--v1" => v1 = true,
            "--jmux" => jmux = true,
            "--socks5" => socks5.push(string(parser.value()?)?),
            "--association" => association = Some(id(parser.value()?, "association")?),
            _ => {
                if !rest.option(&option, parser)? {
                    peer.option(&option, parser)?;
                }
            }
        }
    }
    let jmux = if jmux {
        if v1 {
            return bad("--jmux needs version 2 ids: URL ASSOCIATION CANDIDATE");
        }
        if peer.forward.is_some() {
            return bad("connect --jmux takes --listen ADDR=HOST:PORT; --forward is for accept");
        }
        let mut client = JmuxClient {
            socks5,
            ..JmuxClient::default()
        };
        for text in std::mem::take(&mut peer.listen) {
            let Some((addr, target)) = text.split_once('=') else {
                return bad(format!(
                    "--listen {text:?}: with --jmux, say where it goes: --listen ADDR=HOST:PORT"
                ));
            };
            client
                .listen
                .push((addr.to_owned(), host_port_text("--listen", target)?));
        }
        if client.listen.is_empty() && client.socks5.is_empty() {
            return bad("--jmux needs --listen ADDR=HOST:PORT or --socks5 ADDR");
        }
        Some(client)
    } else if !socks5.is_empty() {
        return bad("--socks5 goes with --jmux");
    } else {
        None
    };
    let peer = peer.finish()?;
    if v1 {
        let [url] = positional.as_slice() else {
            return bad("--v1 needs just URL");
        };
        let url = v1_url(url)?;
        let Some(association) = association else {
            return bad("--v1 needs --association ID");
        };
        return Ok(ConnectArgs {
            url,
            target: ConnectTarget::V1 { association },
            peer,
            jmux,
            rest,
        });
    }
    if association.is_some() {
        return bad("--association goes with --v1; version 2 takes it as an argument");
    }
    let (url, ids) = target(&positional)?;
    Ok(ConnectArgs {
        url,
        target: ConnectTarget::V2(ids),
        peer,
        jmux,
        rest,
    })
}

fn test(parser: &mut lexopt::Parser) -> Parsed<TestArgs> {
    let mut tls = Tls::default();
    let mut proxy = ProxyChoice::default();
    let mut positional = Vec::new();
    while let Some(option) = next_option(parser, &mut positional)? {
        match option.as_str() {
            "--v1" => return bad("version 1 has no test request"),
            _ => {
                if !tls.option(&option, parser)? && !proxy.option(&option, parser)? {
                    return Err(help_or_unknown(&option));
                }
            }
        }
    }
    let (url, ids) = target(&positional)?;
    Ok(TestArgs {
        url,
        ids,
        tls,
        proxy,
    })
}

fn offer(parser: &mut lexopt::Parser) -> Parsed<OfferArgs> {
    let mut peer = PeerParser::default();
    let mut signals = SignalParser::default();
    let mut association = None;
    let mut transports = None;
    while let Some(arg) = parser.next()? {
        let option = match arg {
            Value(value) => return bad(format!("unexpected argument {value:?}")),
            other => name(other),
        };
        match option.as_str() {
            "--association" => association = Some(id(parser.value()?, "association")?),
            "--transports" => {
                let list = string(parser.value()?)?;
                let parsed = parse_transports(&list);
                if parsed.is_empty() {
                    return bad(format!("--transports {list:?}: none of tcp, tls, ws, wss"));
                }
                transports = Some(parsed);
            }
            _ => {
                if !signals.option(&option, parser)? {
                    peer.option(&option, parser)?;
                }
            }
        }
    }
    Ok(OfferArgs {
        signals: signals.finish()?,
        association,
        transports,
        timeout: signals.timeout,
        peer: peer.finish()?,
    })
}

fn answer(parser: &mut lexopt::Parser) -> Parsed<AnswerArgs> {
    let mut peer = PeerParser::default();
    let mut signals = SignalParser::default();
    let mut relays = Vec::new();
    let mut gather = Vec::new();
    let mut api_key = None;
    let mut host_listen = None;
    let mut no_host_candidates = false;
    while let Some(arg) = parser.next()? {
        let option = match arg {
            Value(value) => return bad(format!("unexpected argument {value:?}")),
            other => name(other),
        };
        match option.as_str() {
            "--relay" => relays.push(candidate_url(&string(parser.value()?)?)?),
            "--gather" => gather.push(string(parser.value()?)?),
            "--api-key" => api_key = Some(Secret(string(parser.value()?)?)),
            "--host-listen" => host_listen = Some(string(parser.value()?)?),
            "--no-host-candidates" => no_host_candidates = true,
            _ => {
                if !signals.option(&option, parser)? {
                    peer.option(&option, parser)?;
                }
            }
        }
    }
    let host_listen = match (host_listen, no_host_candidates) {
        (Some(_), true) => {
            return bad("--host-listen and --no-host-candidates contradict each other")
        }
        (_, true) => None,
        (Some(addr), false) => Some(addr),
        (None, false) => Some("0.0.0.0:0".to_owned()),
    };
    Ok(AnswerArgs {
        signals: signals.finish()?,
        relays,
        gather,
        api_key,
        host_listen,
        timeout: signals.timeout,
        peer: peer.finish()?,
    })
}

/// The next option's name (`--name` or `-c`), collecting the positional
/// arguments met on the way; `None` at the end of the arguments.
fn next_option(
    parser: &mut lexopt::Parser,
    positional: &mut Vec<String>,
) -> Parsed<Option<String>> {
    while let Some(arg) = parser.next()? {
        match arg {
            Value(value) => positional.push(string(value)?),
            other => return Ok(Some(name(other))),
        }
    }
    Ok(None)
}

/// An option's name as typed, `--name` or `-c`, owned so that a helper can
/// ask the parser for the option's value.
fn name(arg: lexopt::Arg<'_>) -> String {
    match arg {
        Long(name) => format!("--{name}"),
        Short(c) => format!("-{c}"),
        Value(value) => value.to_string_lossy().into_owned(),
    }
}

fn help_or_unknown(option: &str) -> Stop {
    match option {
        "--help" | "-h" => Stop::Help,
        other => Stop::Bad(format!("unknown option {other}")),
    }
}

/// `URL ASSOCIATION CANDIDATE`.
fn target(positional: &[String]) -> Parsed<(CandidateUrl, Ids)> {
    let [url, association, candidate] = positional else {
        return bad("needs URL ASSOCIATION CANDIDATE");
    };
    Ok((
        candidate_url(url)?,
        Ids {
            association: id(association.into(), "association")?,
            candidate: id(candidate.into(), "candidate")?,
        },
    ))
}

fn v1_url(text: &str) -> Parsed<CandidateUrl> {
    let url = candidate_url(text)?;
    if url.scheme.is_websocket() {
        return bad("version 1 has no WebSocket form: use tcp:// or tls://");
    }
    Ok(url)
}

fn candidate_url(text: &str) -> Parsed<CandidateUrl> {
    CandidateUrl::parse(text).map_err(|e| match e {
        // The library says "configuration" for a bad value; here it is an argument.
        Error::Config(why) | Error::Usage(why) => Stop::Bad(why),
        other => Stop::Bad(other.to_string()),
    })
}

fn id(value: OsString, what: &str) -> Parsed<Uuid> {
    let text = string(value)?;
    Uuid::parse_str(&text).or_else(|_| bad(format!("{what} {text:?} is not a UUID")))
}

fn seconds(text: &str) -> Parsed<Duration> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => bad(format!("--timeout: {text:?} is not a number of seconds")),
    }
}

fn string(value: OsString) -> Parsed<String> {
    value
        .into_string()
        .or_else(|v| bad(format!("{v:?} is not valid UTF-8")))
}

use options::{host_port, host_port_text, PeerParser, SignalParser};

mod options;
#[cfg(test)]
mod tests;
