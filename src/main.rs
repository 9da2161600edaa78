//! The `jet-relay` command: turns arguments into calls on the library.

use jet_relay::config::{ListenUrl, ListenerConfig};
use jet_relay::log::{self, Level};
use jet_relay::message::Method;
use jet_relay::{client, Config, Error, Server};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use uuid::Uuid;

const USAGE: &str = "\
jet-relay: a relay for the JET rendezvous protocol

Usage:
  jet-relay [--config PATH] [--listen URL]...
      Run the relay. The configuration is PATH, else ./relay.toml when it
      exists, else the built-in defaults. Each --listen URL (tcp://HOST:PORT,
      port 0 for any) replaces the configured listeners. One line per
      listener, `listening tcp://ADDRESS`, is printed on stdout once bound.
  jet-relay accept URL ASSOCIATION CANDIDATE
  jet-relay connect URL ASSOCIATION CANDIDATE
      Act as a peer: send a version 2 accept or connect to the relay at URL
      (tcp://HOST:PORT), then bridge the relayed stream to stdin/stdout.
  jet-relay --help | --version

Environment:
  JET_RELAY_LOG   log level (off, error, warn, info, debug); overrides the file.
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
        Some("accept") => peer(Method::Accept, &args[1..]),
        Some("connect") => peer(Method::Connect, &args[1..]),
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

fn peer(method: Method, args: &[String]) -> Result<(), Error> {
    let [url, association, candidate] = args else {
        return Err(Error::Config(format!(
            "{} needs URL ASSOCIATION CANDIDATE (see --help)",
            method.as_str()
        )));
    };
    let url = client::CandidateUrl::parse(url)?;
    let parse = |text: &str, what: &str| {
        Uuid::parse_str(text).map_err(|_| Error::Config(format!("{text:?} is not a {what} id")))
    };
    let association = parse(association, "association")?;
    let candidate = parse(candidate, "candidate")?;
    let (sock, _) = client::open(&url, method, 2, Some(association), candidate)?;
    // One line on stderr once the relay answered 200: for an accept, the
    // moment the other peer may connect.
    eprintln!(
        "jet-relay: {} {association} {candidate}: 200",
        method.as_str()
    );
    client::bridge_stdio(sock)
}
