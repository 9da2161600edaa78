//! The `jet-relay` command: turns arguments into calls on the library.

use jet_relay::log::{self, Level};
use jet_relay::peer::bridge::{bridge, listen_once, Local};
use jet_relay::peer::negotiate::{self, ClientOptions, ServerOptions};
use jet_relay::peer::signaling::{SignalIn, SignalOut};
use jet_relay::peer::{Connector, JetRequest, TlsOptions};
use jet_relay::relay::config::{ListenUrl, ListenerConfig};
use jet_relay::wire::message::Method;
use jet_relay::wire::secret::ApiKey;
use jet_relay::wire::signal::parse_transports;
use jet_relay::wire::CandidateUrl;
use jet_relay::{Config, Error, Server};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use uuid::Uuid;

const USAGE: &str = "\
jet-relay: a relay for the JET rendezvous protocol, and its peers

Usage:
  jet-relay [--config PATH] [--listen URL]...
      Run the relay. The configuration is PATH, else ./relay.toml when it
      exists, else the built-in defaults. Each --listen URL (tcp://HOST:PORT,
      port 0 for any) replaces the configured listeners. One line per
      listener, `listening tcp://ADDRESS`, is printed on stdout once bound.

  jet-relay accept URL ASSOCIATION CANDIDATE [PEER OPTIONS]
  jet-relay connect URL ASSOCIATION CANDIDATE [PEER OPTIONS]
      Act as the server peer (accept) or the client peer (connect) on one
      candidate: URL is tcp://HOST:PORT, tls://HOST:PORT, ws://HOST[:PORT] or
      wss://HOST[:PORT] (no scheme: tcp). Once the relay answers 200 (101 for
      WebSocket), `jet-relay: accept|connect A C: 200` is printed on stderr
      and the relayed stream is bridged to stdin/stdout.
  jet-relay accept --v1 URL [PEER OPTIONS]
      Version 1 accept: the relay names the association; stderr gets
      `jet-relay: accept association=ID instance=NAME timeout=SECONDS: 200`.
  jet-relay connect --v1 --association ID URL [PEER OPTIONS]
      Version 1 connect to that association.
  jet-relay test URL ASSOCIATION CANDIDATE [--ca FILE] [--insecure]
      Test a candidate: exit 0 when it is usable, 1 (with the reason on
      stderr) when it is not, 2 for bad arguments.

  jet-relay answer --signal-in PATH --signal-out PATH [--relay URL]...
                   [--gather URL]... [--api-key KEY] [--host-listen ADDR]
                   [--no-host-candidates] [PEER OPTIONS]
      The server peer of a negotiation (draft 0.2 section 2.2.3): reads the
      offer, accepts on one candidate per --relay URL (ids it makes up) and on
      the candidates the relay's REST API gathers (--gather http://HOST:PORT
      or https://HOST:PORT, POST /jet/gather/ID; a relay with an api_key
      wants it: JET_API_KEY or --api-key KEY), listens for direct connections on --host-listen
      (default 0.0.0.0:0; host candidates disclose local addresses:
      --no-host-candidates turns them off), writes the answer, then keeps the
      candidate the complete message selects and closes the others.
  jet-relay offer --signal-in PATH --signal-out PATH [--association ID]
                  [--transports LIST] [PEER OPTIONS]
      The client peer: writes the offer (a fresh association id unless
      given; --transports tcp,tls,ws,wss limits the candidate types), tests
      every candidate of the answer in parallel, selects the first usable one
      (a host candidate beats a relay one that worked less than 250 ms
      before it), closes the others and writes the complete message.
      Signaling messages are JSON lines; PATH may be a file, a FIFO, or - for
      stdin/stdout. Both print `jet-relay: selected candidate ID URL` on
      stderr, then bridge the selected stream.

Peer options:
  --forward HOST:PORT  bridge the stream to a new connection to HOST:PORT
  --listen ADDR        accept one connection on ADDR first (its bound address
                       is printed on stdout as `listening tcp://ADDRESS`),
                       then contact the relay and bridge the stream to it
  --ca FILE            trust only the certificates in FILE (PEM) for tls://
                       and wss:// (default: the system roots)
  --insecure           do not verify the relay's certificate (tests only)
  --timeout SECONDS    how long offer/answer wait for each signaling message
                       (default 60)

  jet-relay --help | --version

Environment:
  JET_RELAY_LOG   log level (off, error, warn, info, debug); overrides the
                  file. Peers default to warn.
  JET_API_KEY     the key `answer` sends to the REST API of --gather relays
                  (Authorization: Bearer); --api-key overrides it. Prefer the
                  variable: command lines are visible to every local user.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("--version" | "-V") => {
            println!("jet-relay {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(command @ ("accept" | "connect" | "test" | "offer" | "answer")) => {
            return peer_main(command, &args[1..]);
        }
        _ => relay(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jet-relay: {e}");
            ExitCode::from(2)
        }
    }
}

fn relay(args: &[String]) -> Result<(), Error> {
    let mut config_path = None;
    let mut listen = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| Error::Config(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--config" => config_path = Some(PathBuf::from(value("--config")?)),
            "--listen" => listen.push(value("--listen")?),
            other => {
                return Err(Error::Config(format!(
                    "unknown argument {other:?} (see --help)"
                )))
            }
        }
    }
    let default_path = PathBuf::from("relay.toml");
    let mut config = match config_path {
        Some(path) => Config::load(&path)?,
        None if default_path.exists() => Config::load(&default_path)?,
        None => Config::default(),
    };
    if !listen.is_empty() {
        config.listeners = listen
            .iter()
            .map(|url| {
                Ok(ListenerConfig::new(
                    ListenUrl::parse(url).map_err(|e| Error::Config(format!("--listen: {e}")))?,
                ))
            })
            .collect::<Result<_, Error>>()?;
    }
    let level = match std::env::var("JET_RELAY_LOG") {
        Ok(text) => Level::parse(&text)
            .ok_or_else(|| Error::Config(format!("JET_RELAY_LOG: {text:?} is not a log level")))?,
        Err(_) => config.log_level,
    };
    log::set_level(level);

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| Error::Config(format!("cannot install the signal handler: {e}")))?;

    let mut server = Server::start(config)?;
    {
        let mut stdout = std::io::stdout().lock();
        for url in server.local_urls() {
            let _ = writeln!(stdout, "listening {url}");
        }
        let _ = stdout.flush();
    }
    jet_relay::info!("jet-relay {} started", env!("CARGO_PKG_VERSION"));
    let _ = stop_rx.recv();
    jet_relay::info!("stopping on signal");
    server.shutdown();
    log::flush(std::time::Duration::from_millis(200));
    Ok(())
}

/// How long a peer waits at exit for its queued log lines to be written.
const LOG_FLUSH_LIMIT: Duration = Duration::from_millis(500);

/// Runs a peer command: 0 on success, 2 for bad arguments, 1 for anything else
/// (for `test`: the candidate is not usable).
fn peer_main(command: &str, args: &[String]) -> ExitCode {
    let level = std::env::var("JET_RELAY_LOG")
        .ok()
        .and_then(|text| Level::parse(&text))
        .unwrap_or(Level::Warn);
    log::set_level(level);
    let result = PeerArgs::parse(command, args).and_then(|parsed| match command {
        "accept" => single(Method::Accept, parsed),
        "connect" => single(Method::Connect, parsed),
        "test" => test(parsed),
        "offer" => offer(parsed),
        _ => answer(parsed),
    });
    // Warnings are queued for a writer thread: let them out before exiting
    // (why a gather failed is often the reason the command fails).
    log::flush(LOG_FLUSH_LIMIT);
    match result {
        Ok(code) => code,
        Err(e @ Error::Config(_)) => {
            eprintln!("jet-relay: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("jet-relay: {command}: {e}");
            ExitCode::from(1)
        }
    }
}

/// The options of the peer commands.
#[derive(Default)]
struct PeerArgs {
    positional: Vec<String>,
    v1: bool,
    association: Option<Uuid>,
    forward: Option<String>,
    listen: Option<String>,
    tls: TlsOptions,
    timeout: Option<Duration>,
    signal_in: Option<String>,
    signal_out: Option<String>,
    relays: Vec<CandidateUrl>,
    gather: Vec<String>,
    api_key: Option<String>,
    host_listen: Option<String>,
    no_host_candidates: bool,
    transports: Option<String>,
}

impl PeerArgs {
    fn parse(command: &str, args: &[String]) -> Result<PeerArgs, Error> {
        // Which options each command takes; anything else is an error.
        let allowed: &[&str] = match command {
            "accept" => &["--v1", "--forward", "--listen", "--ca", "--insecure"],
            "connect" => &[
                "--v1",
                "--association",
                "--forward",
                "--listen",
                "--ca",
                "--insecure",
            ],
            "test" => &["--ca", "--insecure"],
            "offer" => &[
                "--signal-in",
                "--signal-out",
                "--association",
                "--transports",
                "--forward",
                "--listen",
                "--ca",
                "--insecure",
                "--timeout",
            ],
            _ => &[
                "--signal-in",
                "--signal-out",
                "--relay",
                "--gather",
                "--api-key",
                "--host-listen",
                "--no-host-candidates",
                "--forward",
                "--listen",
                "--ca",
                "--insecure",
                "--timeout",
            ],
        };
        let mut parsed = PeerArgs::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if !arg.starts_with("--") {
                parsed.positional.push(arg.clone());
                continue;
            }
            if !allowed.contains(&arg.as_str()) {
                return Err(Error::Config(format!(
                    "{command}: unknown option {arg:?} (see --help)"
                )));
            }
            let mut value = || {
                rest.next()
                    .cloned()
                    .ok_or_else(|| Error::Config(format!("{arg} needs a value")))
            };
            match arg.as_str() {
                "--v1" => parsed.v1 = true,
                "--insecure" => parsed.tls.insecure = true,
                "--no-host-candidates" => parsed.no_host_candidates = true,
                "--association" => parsed.association = Some(parse_id(&value()?, "association")?),
                "--forward" => parsed.forward = Some(value()?),
                "--listen" => parsed.listen = Some(value()?),
                "--ca" => parsed.tls.ca_file = Some(PathBuf::from(value()?)),
                "--signal-in" => parsed.signal_in = Some(value()?),
                "--signal-out" => parsed.signal_out = Some(value()?),
                "--relay" => parsed.relays.push(CandidateUrl::parse(&value()?)?),
                "--gather" => parsed.gather.push(value()?),
                "--api-key" => parsed.api_key = Some(value()?),
                "--host-listen" => parsed.host_listen = Some(value()?),
                "--transports" => parsed.transports = Some(value()?),
                "--timeout" => {
                    let text = value()?;
                    let seconds = text
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            Error::Config(format!("--timeout: {text:?} is not a number of seconds"))
                        })?;
                    parsed.timeout = Some(Duration::from_secs_f64(seconds));
                }
                _ => unreachable!("every allowed option is matched above"),
            }
        }
        if parsed.forward.is_some() && parsed.listen.is_some() {
            return Err(Error::Config(
                "--forward and --listen cannot be used together".into(),
            ));
        }
        if parsed.tls.insecure {
            eprintln!(
                "jet-relay: WARNING: --insecure: the relay's TLS certificate is NOT verified; \
                 anyone on the path can read and change this connection. Use it for tests only."
            );
        }
        Ok(parsed)
    }

    fn connector(&self) -> Arc<Connector> {
        Arc::new(Connector::new(self.tls.clone()))
    }

    /// Where the stream goes; `--listen` takes its local connection now,
    /// before the relay is contacted.
    fn local(&self) -> Result<Local, Error> {
        Ok(match (&self.forward, &self.listen) {
            (Some(target), _) => Local::Forward(target.clone()),
            (None, Some(addr)) => Local::Accepted(listen_once(addr)?),
            (None, None) => Local::Stdio,
        })
    }

    fn signals(&self, command: &str, lines: usize) -> Result<(SignalIn, SignalOut), Error> {
        let (Some(input), Some(output)) = (&self.signal_in, &self.signal_out) else {
            return Err(Error::Config(format!(
                "{command} needs --signal-in PATH and --signal-out PATH (- for stdio)"
            )));
        };
        let input = SignalIn::open(input, lines)?;
        let output = SignalOut::open(output, self.timeout())?;
        Ok((input, output))
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(negotiate::NEGOTIATION_TIMEOUT)
    }

    /// `URL ASSOCIATION CANDIDATE` (or just `URL` with --v1).
    fn target(&self, command: &str) -> Result<(CandidateUrl, Option<Uuid>, Uuid), Error> {
        match (self.v1, self.positional.as_slice()) {
            (false, [url, association, candidate]) => Ok((
                CandidateUrl::parse(url)?,
                Some(parse_id(association, "association")?),
                parse_id(candidate, "candidate")?,
            )),
            (true, [url]) => Ok((
                CandidateUrl::parse(url)?,
                None,
                jet_relay::wire::message::V1_CANDIDATE,
            )),
            (false, _) => Err(Error::Config(format!(
                "{command} needs URL ASSOCIATION CANDIDATE (see --help)"
            ))),
            (true, _) => Err(Error::Config(format!(
                "{command} --v1 needs just URL (see --help)"
            ))),
        }
    }
}

fn parse_id(text: &str, what: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::Config(format!("{text:?} is not a {what} id")))
}

/// `accept` and `connect`: one candidate, then the bridge.
fn single(method: Method, args: PeerArgs) -> Result<ExitCode, Error> {
    let (url, mut association, candidate) = args.target(method.as_str())?;
    if args.v1 {
        if method == Method::Connect {
            association = Some(
                args.association
                    .ok_or_else(|| Error::Config("connect --v1 needs --association ID".into()))?,
            );
        }
        if url.scheme.is_websocket() {
            return Err(Error::Config(
                "version 1 has no WebSocket form: use tcp:// or tls://".into(),
            ));
        }
    } else if args.association.is_some() {
        return Err(Error::Config(
            "--association goes with --v1; version 2 takes it as an argument".into(),
        ));
    }
    let request = JetRequest {
        method,
        version: if args.v1 { 1 } else { 2 },
        association,
        candidate,
    };
    let local = args.local()?;
    let (stream, response) = args.connector().open(&url, &request)?;
    // One line on stderr once the relay answered: for an accept, the moment
    // the other peer may connect.
    if args.v1 && method == Method::Accept {
        eprintln!(
            "jet-relay: accept association={} instance={} timeout={}: 200",
            response.header("Jet-Association").unwrap_or("?"),
            response.header("Jet-Instance").unwrap_or("?"),
            response.header("Jet-Timeout").unwrap_or("?"),
        );
    } else {
        eprintln!(
            "jet-relay: {} {} {candidate}: {}",
            method.as_str(),
            association.unwrap_or_default(),
            response.status
        );
    }
    bridge(stream, local)?;
    Ok(ExitCode::SUCCESS)
}

/// `test`: exit 0 when the candidate is usable, 1 with the reason when not.
fn test(args: PeerArgs) -> Result<ExitCode, Error> {
    if args.v1 {
        return Err(Error::Config("version 1 has no test request".into()));
    }
    let (url, association, candidate) = args.target("test")?;
    let request = JetRequest {
        method: Method::Test,
        version: 2,
        association,
        candidate,
    };
    let association = association.unwrap_or_default();
    match args.connector().open(&url, &request) {
        Ok((stream, response)) => {
            // The relay closes a test right after its answer; so do we.
            let _ = stream.shutdown_write();
            eprintln!(
                "jet-relay: test {association} {candidate}: {} usable",
                response.status
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ Error::Config(_)) => Err(e),
        Err(e) => {
            eprintln!("jet-relay: test {association} {candidate}: not usable: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The client peer of a negotiation.
fn offer(args: PeerArgs) -> Result<ExitCode, Error> {
    if !args.positional.is_empty() {
        return Err(Error::Config(
            "offer takes no positional argument (see --help)".into(),
        ));
    }
    let transports = match &args.transports {
        Some(list) => {
            let parsed = parse_transports(list);
            if parsed.is_empty() {
                return Err(Error::Config(format!(
                    "--transports {list:?}: none of tcp, tls, ws, wss"
                )));
            }
            Some(parsed)
        }
        None => None,
    };
    let options = ClientOptions {
        association: args.association.unwrap_or_else(Uuid::new_v4),
        transports,
        timeout: args.timeout(),
        host_window: negotiate::HOST_PREFERENCE_WINDOW,
    };
    let local = args.local()?;
    let (input, mut output) = args.signals("offer", 1)?;
    let selection = negotiate::run_client(&args.connector(), &options, &input, &mut output)?;
    announce(&selection);
    bridge(selection.stream, local)?;
    Ok(ExitCode::SUCCESS)
}

/// The environment variable that holds the REST API key.
const API_KEY_ENV: &str = "JET_API_KEY";

/// The server peer of a negotiation.
fn answer(args: PeerArgs) -> Result<ExitCode, Error> {
    if !args.positional.is_empty() {
        return Err(Error::Config(
            "answer takes no positional argument (see --help)".into(),
        ));
    }
    let host_listen = match (&args.host_listen, args.no_host_candidates) {
        (Some(_), true) => {
            return Err(Error::Config(
                "--host-listen and --no-host-candidates contradict each other".into(),
            ))
        }
        (_, true) => None,
        (Some(addr), false) => Some(addr.clone()),
        (None, false) => Some("0.0.0.0:0".to_owned()),
    };
    // The option wins over the environment (where empty means unset);
    // neither is ever printed.
    let from_env = || std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty());
    let api_key = match args.api_key.clone().or_else(from_env) {
        Some(key) => Some(ApiKey::new(&key)?),
        None => None,
    };
    let options = ServerOptions {
        relays: args.relays.clone(),
        gather: args.gather.clone(),
        api_key,
        host_listen,
        timeout: args.timeout(),
    };
    let local = args.local()?;
    let (input, mut output) = args.signals("answer", 2)?;
    let selection = negotiate::run_server(&args.connector(), &options, &input, &mut output)?;
    announce(&selection);
    bridge(selection.stream, local)?;
    Ok(ExitCode::SUCCESS)
}

/// Printed once the losing candidates are closed.
fn announce(selection: &negotiate::Selection) {
    eprintln!(
        "jet-relay: selected candidate {} {}",
        selection.candidate.id, selection.candidate.url
    );
}
